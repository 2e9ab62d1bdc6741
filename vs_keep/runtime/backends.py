"""Execution backends as small frozen dataclasses: what runs KEEP and its codebook decoder, and how.

- `TorchBackend`: eager PyTorch on CPU or CUDA, fp32 (reference numerics; `cpu_fast` adds the fp32 CPU rewrites
  of `runtime.cpu`) or bf16/fp16 autocast with the fp32 islands of `runtime.precision`.
- `OrtBackend`: the decoder through onnxruntime (exported once per model and shape into the cache dir).
- `OpenVinoBackend`: the decoder through OpenVINO, bf16 on CPUs with AVX512-BF16/AMX (`cpu_precision="bf16"`).
- `TensorRTBackend`: the decoder as a TensorRT engine; without TensorRT or CUDA it falls back to the torch decoder
  and says so once in the log, unless `required` (decoder="tensorrt" asked for explicitly): then an InputError
  names the missing package.

Fields that do not change results (`cache_dir`, `force_rebuild`, `threads`) are `repr=False`, so `repr(backend)`
is usable as a cache key. Variants come from `dataclasses.replace`, never mutation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, ContextManager

import torch
from torch import nn

from ..errors import InputError
from .decoder import DecoderFn, decoder_spec, torch_decoder
from .precision import PRECISIONS, apply_precision, autocast_context

log = logging.getLogger(__name__)

__all__ = [
    "OpenVinoBackend", "OrtBackend", "TensorRTBackend", "TorchBackend", "cached_decoder_onnx",
    "torch_fallback_notice",
]

_NOTICES: set[str] = set()


def torch_fallback_notice(reason: str) -> None:
    """Log why an accelerated decoder is not used: once per reason per process."""
    if reason not in _NOTICES:
        _NOTICES.add(reason)
        log.warning("%s; the codebook decoder runs in PyTorch", reason)


@dataclass(frozen=True, kw_only=True)
class TorchBackend:
    """Eager PyTorch for the whole model."""

    name: ClassVar[str] = "torch"

    #: "cpu", "cuda", "cuda:1", ...
    device: str = "cpu"
    #: "fp32" (reference numerics), "bf16" or "fp16" (autocast; see runtime.precision.FP32_STAGES)
    precision: str = "fp32"
    #: fp32 CPU rewrites (Winograd/GEMM convolutions, fused SiLU); no effect on CUDA or under autocast
    cpu_fast: bool = True
    #: intra-op threads for CPU (None: leave torch's setting)
    threads: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        torch.device(self.device)  # raises on a malformed device string

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device and apply the precision marks and CPU rewrites (in place)."""
        from .cpu import optimize_cpu, restore_reference

        if self.threads:
            torch.set_num_threads(int(self.threads))
        model = model.to(self.device)
        apply_precision(model, self.precision)
        if self.cpu_fast and torch.device(self.device).type == "cpu":
            optimize_cpu(model)
        else:
            restore_reference(model)
        return model

    def autocast(self) -> ContextManager[Any]:
        return autocast_context(self.device, self.precision)

    def decoder(self, model: nn.Module) -> DecoderFn:
        return torch_decoder(model)


@dataclass(frozen=True, kw_only=True)
class OrtBackend:
    """onnxruntime for the decoder (fp32); the rest of the model stays in torch."""

    name: ClassVar[str] = "onnxruntime"

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = field(default=None, repr=False)
    cache_dir: str | None = field(default=None, repr=False)

    def decoder(self, model: nn.Module) -> DecoderFn:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            torch_fallback_notice("onnxruntime is not installed (pip install onnxruntime)")
            return torch_decoder(model)
        from .onnx_export import OrtDecoder

        path = cached_decoder_onnx(model, self.cache_dir, "OrtBackend")
        return OrtDecoder(path, decoder_spec(model), providers=self.providers, threads=self.threads)


@dataclass(frozen=True, kw_only=True)
class OpenVinoBackend:
    """OpenVINO for the decoder on CPU: "bf16" (the opt-in `cpu_precision="bf16"`, see runtime.openvino) or
    "fp32"; the rest of the model stays in torch fp32."""

    name: ClassVar[str] = "openvino"

    precision: str = "bf16"
    threads: int | None = field(default=None, repr=False)
    cache_dir: str | None = field(default=None, repr=False)

    def decoder(self, model: nn.Module) -> DecoderFn:
        from .openvino import OpenVinoDecoder

        path = cached_decoder_onnx(model, self.cache_dir, "OpenVinoBackend")
        return OpenVinoDecoder(path, decoder_spec(model), precision=self.precision, threads=self.threads)


def cached_decoder_onnx(model: nn.Module, cache_dir: str | None, who: str) -> Any:
    """The decoder's ONNX file in the cache root's onnx/ folder, exported once per weights and shape."""
    from ..cache import folder
    from .onnx_export import export_decoder_onnx, model_hash

    spec = decoder_spec(model)
    path = folder("onnx", cache_dir) / f"decoder-{model_hash(model)}-{spec.face_size}-b{spec.batch}.onnx"
    if not path.exists():
        if next(model.parameters()).device.type != "cpu":
            raise InputError(f"{who}: export needs the model on CPU once; load it with device='cpu'")
        export_decoder_onnx(model, path)
    return path


@dataclass(frozen=True, kw_only=True)
class TensorRTBackend:
    """TensorRT engine for the decoder (built once per identity, cached); torch elsewhere."""

    name: ClassVar[str] = "tensorrt"

    device_id: int = 0
    #: engine precision: "fp16" (default: the generator in fp16, SFT/CFA pinned to fp32 by the accuracy guard),
    #: "bf16" (fails the guard: every layer pinned to fp32) or "fp32"
    precision: str = "fp16"
    workspace_gib: float = 4.0
    #: TensorRT builder optimisation level (0-5)
    opt_level: int = 3
    cache_dir: str | None = field(default=None, repr=False)
    force_rebuild: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.opt_level <= 5:
            raise InputError(f"TensorRT opt_level must be 0..5, got {self.opt_level}")

    def fp32_layers(self) -> tuple[str, ...]:
        """ONNX scope fragments of decoder layers kept fp32 in a 16-bit engine (runtime.precision.FP32_STAGES)."""
        from .precision import FP32_STAGES

        keep = FP32_STAGES[self.precision]
        return (("fuse_convs_dict", "cross_fuse") if "fusion" in keep else ()) + (("generator",) if "generator" in keep else ())

    def identity(self, model: nn.Module) -> tuple[dict[str, Any], str]:
        """Everything the engine depends on, and the model hash; raises TensorRTUnavailable without TRT/CUDA."""
        from .onnx_export import OPSET, model_hash
        from .trt import device_identity, import_tensorrt

        trt = import_tensorrt()
        spec = decoder_spec(model)
        digest = model_hash(model)
        ident = {
            "model": digest,
            "inputs": {k: list(v) for k, v in spec.input_shapes().items()},
            "precision": self.precision,
            "workspace_gib": self.workspace_gib,
            "opt_level": self.opt_level,
            "opset": OPSET,
            "fp32_layers": list(self.fp32_layers()),
            "tensorrt": trt.__version__,
            "torch": torch.__version__,
            **device_identity(self.device_id),
        }
        return ident, digest

    def engine_path(self, model: nn.Module) -> Any:
        """Build (or reuse) the engine for `model` and return its path."""
        from .onnx_export import export_decoder_onnx
        from .trt import build_trt_engine, engine_paths

        ident, digest = self.identity(model)
        paths = engine_paths(ident, digest, self.cache_dir)
        onnx_path = paths["engine"].with_suffix(".onnx")
        if self.force_rebuild or not paths["engine"].exists():
            cpu_model = _cpu_copy_if_needed(model)
            export_decoder_onnx(cpu_model, onnx_path)
        return build_trt_engine(onnx_path, paths, ident, precision=self.precision, workspace_gib=self.workspace_gib,
                            opt_level=self.opt_level, force=self.force_rebuild, fp32_layers=self.fp32_layers())

    def decoder(self, model: nn.Module) -> DecoderFn:
        """The TensorRT decoder. The user asked for it by name (decoder="tensorrt"), so its absence is an error
        naming the package, never a silent fallback to torch."""
        from .trt import TensorRTUnavailable, TrtDecoder

        try:
            path = self.engine_path(model)
        except TensorRTUnavailable as exc:
            raise InputError(f"decoder='tensorrt' cannot run: {exc}; install it or use decoder='auto'") from None
        return TrtDecoder(path, decoder_spec(model), self.device_id)


def _cpu_copy_if_needed(model: nn.Module) -> nn.Module:
    """The ONNX export runs on CPU in fp32; copy a CUDA model's weights over for it (transient)."""
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model
    import copy

    return copy.deepcopy(model).to("cpu", torch.float32)
