"""Opt-in bf16 on CPUs with AVX512-BF16 or AMX: KEEP's codebook decoder through OpenVINO with its bf16 hint.

Why this path: measured on the synthetic full KEEP decoder (one 512² frame), OpenVINO's bf16 kernels beat both
torch's fp32 (with the CPU rewrites) and torch's bf16 autocast (oneDNN, NCHW): on an AMD EPYC with AVX512-BF16,
1 thread, 9.9 s vs 13.4 s (fp32 shipped) vs 15.8 s (torch bf16); on an Intel Xeon with AMX, 2 threads, 0.37 s vs
1.71 s (issue 18). `vs-keep bench` measures both again on the machine it runs on.

What runs in bf16 and what stays fp32 is the accuracy guard's call (`runtime.precision`): the codebook argmax and
everything that feeds it (encoders, transformer, Kalman gains, flow) stay fp32 because bf16 flips codes there
even at a chunk's first frame (synthetic weights: 2-3 % of the codes); the decoder (generator + SFT/CFA fusion,
~35 % of the FLOPs) changes no code of its own frame. Not bit-exact: the bf16 decoder output differs from fp32 by
~2-3e-2 relative, and through the recurrence (warp -> HQ encoder -> Kalman mix) later frames can pick other codes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .decoder import DecoderSpec

__all__ = ["BF16_FLAGS", "BF16_STAGES", "OpenVinoDecoder", "check_bf16_cpu", "openvino_bf16_supported"]

log = logging.getLogger(__name__)

#: stages (runtime.precision.STAGE_MODULES) the opt-in CPU bf16 mode runs in 16 bits: the codebook decoder only
BF16_STAGES = ("generator", "fusion")
#: /proc/cpuinfo flags that give native bf16 dot products
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _import_openvino() -> Any:
    """`import openvino` without its model-conversion tools: importing those sends a telemetry event from a forked
    process (fork in a multi-threaded VapourSynth host can deadlock; no network traffic should come from a filter).
    We only read ONNX files, which the runtime does itself; the tools stay importable afterwards."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # ImportError inside openvino/__init__
    try:
        import openvino
    except ImportError:
        return None
    finally:
        if blocked and sys.modules.get("openvino.tools.ovc") is None:
            sys.modules.pop("openvino.tools.ovc", None)
    return openvino


def openvino_bf16_supported() -> bool:
    """OpenVINO is installed and its CPU plugin reports native bf16 here."""
    ov = _import_openvino()
    if ov is None:
        return False
    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no CPU plugin: not supported
        return False


def check_bf16_cpu(kind: dict[str, Any] | None = None) -> None:
    """Raise `InputError` naming `cpu_precision` when bf16 cannot run fast here (no bf16 units, no OpenVINO).
    `kind`: the CPU as `runtime.cpu_choice.cpu_kind()` describes it (default: this one)."""
    from .cpu_choice import cpu_kind

    here = kind is None
    kind = cpu_kind() if kind is None else kind
    if not any(f in kind.get("flags", ()) for f in BF16_FLAGS):
        raise InputError(
            f"cpu_precision='bf16' needs a CPU with AVX512-BF16 or AMX; this one ({kind.get('model')}, flags: "
            f"{' '.join(kind.get('flags', ())) or 'none that matter'}) has neither, and emulated bf16 is slower than "
            "fp32: use cpu_precision='fp32'")
    if _import_openvino() is None:
        raise InputError("cpu_precision='bf16' runs KEEP's codebook decoder in OpenVINO, which is not installed: "
                         "pip install openvino (or vs-keep[openvino]), or use cpu_precision='fp32'")
    if here and not openvino_bf16_supported():
        raise InputError("cpu_precision='bf16': OpenVINO reports no bf16 support on this CPU; use cpu_precision='fp32'")


class OpenVinoDecoder:
    """An exported KEEP decoder compiled by OpenVINO for the CPU; callable like `KEEP.decode_codes`.

    precision "bf16" sets OpenVINO's inference-precision hint (bf16 kernels where the CPU has them), "fp32" keeps
    fp32 (used to check the plumbing on any CPU). threads: OpenVINO's CPU threads (default: torch's count).
    """

    def __init__(self, path: str | os.PathLike[str], spec: DecoderSpec, *, precision: str = "bf16",
                 threads: int | None = None) -> None:
        if precision not in _HINTS:
            raise InputError(f"OpenVINO decoder precision must be fp32 or bf16, got {precision!r}")
        ov = _import_openvino()
        if ov is None:
            raise InputError("the OpenVINO decoder needs openvino: pip install openvino")
        config = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.spec = spec
        self.precision = precision

    def __call__(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> tuple[Tensor, dict[int, Tensor]]:
        feeds = self.spec.feeds(idx, feats, memory)
        results = self.request.infer({n: t.detach().to("cpu", torch.int64 if n == "idx" else torch.float32).numpy()
                                      for n, t in feeds.items()})
        by_name = {port.get_any_name(): np.asarray(value) for port, value in results.items()}
        device = idx.device
        out = torch.from_numpy(np.array(by_name["out"], np.float32)).to(device)
        new_memory = {r: torch.from_numpy(np.array(by_name[f"new_mem_{r}"], np.float32)).to(device) for r, _ in self.spec.memory}
        return out, new_memory
