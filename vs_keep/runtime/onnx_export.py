"""ONNX export of KEEP's codebook decoder and an onnxruntime runner with the torch decoder's call signature.

The ONNX file is the hand-off format for TensorRT (`runtime.trt`) and a CPU alternative (onnxruntime). Export uses
the TorchScript-based exporter (no onnxscript dependency) with static shapes: one face size and batch per file,
which is what an engine cache keys on anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import VsKeepError
from .decoder import CodebookDecoder, DecoderSpec, decoder_spec
from .reference import reference_ops

log = logging.getLogger(__name__)

__all__ = ["OrtDecoder", "decoder_feeds", "export_decoder_onnx", "model_hash"]

OPSET = 17


def model_hash(model: nn.Module, length: int = 16) -> str:
    """sha256 of the model's state dict (names, shapes, dtypes, values): identifies weights for engine caches."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def export_decoder_onnx(model: nn.Module, path: str | os.PathLike[str], *, batch: int = 1) -> tuple[Path, DecoderSpec]:
    """Write the decoder graph of `model` (fp32, on CPU) to `path`; returns (path, spec). Atomic (temp + rename)."""
    spec = decoder_spec(model, batch)
    wrapper = CodebookDecoder(model).eval()
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise VsKeepError("export_decoder_onnx: export a float32 CPU model (load it with device='cpu')")
    n_codes = int(model.quantize.embedding.weight.shape[0])
    inputs = spec.example_inputs(n_codes=n_codes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(), reference_ops(), _quiet():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
            torch.onnx.export(
                wrapper, inputs, tmp, input_names=list(spec.input_names), output_names=list(spec.output_names),
                opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.debug("exported decoder (%s) to %s", spec, path)
    return path, spec


def session_options(threads: int | None) -> Any:
    """onnxruntime options for sharing the CPU with torch: full graph optimisation, and no spin-waiting of idle
    intra-op threads after a run (they would steal the cores from the torch stages that follow)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def decoder_feeds(spec: DecoderSpec, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> dict[str, np.ndarray]:
    """The exported decoder's inputs by name as CPU numpy arrays (zeros and has_memory = 0 without memory)."""
    out: dict[str, Any] = {"idx": idx.detach().to("cpu", torch.int64).numpy()}
    for r, _ in spec.feats:
        out[f"enc_{r}"] = feats[r].detach().float().cpu().numpy()
    for r, c in spec.memory:
        out[f"mem_{r}"] = memory[r].detach().float().cpu().numpy() if memory else np.zeros((spec.batch, c, r, r), np.float32)
    out["has_memory"] = np.array([1.0 if memory else 0.0], np.float32)
    return out


class OrtDecoder:
    """Runs an exported decoder with onnxruntime; callable like `decoder.torch_decoder(model)`."""

    def __init__(self, path: str | os.PathLike[str], spec: DecoderSpec, *, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        import onnxruntime as ort  # lazy: optional dependency

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=list(providers))
        self.spec = spec

    def feeds(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> dict[str, np.ndarray]:
        return decoder_feeds(self.spec, idx, feats, memory)

    def __call__(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> tuple[Tensor, dict[int, Tensor]]:
        results = self.session.run(list(self.spec.output_names), self.feeds(idx, feats, memory))
        device = idx.device
        out = torch.from_numpy(results[0]).to(device)
        new_memory = {r: torch.from_numpy(t).to(device) for (r, _), t in zip(self.spec.memory, results[1:])}
        return out, new_memory


@contextlib.contextmanager
def _quiet(names: tuple[str, ...] = ("torch.onnx", "torch.export", "torch._dynamo")) -> Iterator[None]:
    """The exporters log every graph rewrite at INFO; keep that out of a user's log."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout may be vspipe's video stream
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
