"""Execution backends as small frozen dataclasses: what runs KEEP and its codebook decoder, and how.

- `TorchBackend`: eager PyTorch on CPU or CUDA, fp32 (reference numerics; `cpu_fast` adds the fp32 CPU rewrites
  of `runtime.cpu`) or fp16 autocast with the fp32 islands of `runtime.precision`.
- `OpenVinoBackend`: the decoder through OpenVINO, bf16 on CPUs with AVX512-BF16/AMX (`cpu_precision="bf16"`).
- `TensorRTBackend`: the decoder as a TensorRT engine; without TensorRT or CUDA an InputError names the option
  and the package (an opt-in backend never falls back to torch).

Fields that do not change results (`cache_dir`, `force_rebuild`) are `repr=False`, so `repr(backend)` is usable
as a cache key. Variants come from `dataclasses.replace`, never mutation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch
from torch import nn

from ..errors import InputError
from ..models.keep import DecoderFn
from .decoder import decoder_spec
from .precision import apply_precision, autocast_context, check_precision

__all__ = ["OpenVinoBackend", "TensorRTBackend", "TorchBackend"]


@dataclass(frozen=True, kw_only=True)
class TorchBackend:
    """Eager PyTorch for the whole model."""

    #: "cpu", "cuda", "cuda:1", ...
    device: str = "cpu"
    #: "fp32" (reference numerics) or "fp16" (autocast; see runtime.precision.FP32_STAGES)
    precision: str = "fp32"
    #: fp32 CPU rewrites (Winograd/GEMM convolutions, fused SiLU); no effect on CUDA or under autocast
    cpu_fast: bool = True

    def __post_init__(self) -> None:
        check_precision(self.precision)
        torch.device(self.device)  # raises on a malformed device string

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device and apply the precision marks and CPU rewrites (in place)."""
        from .cpu import optimize_cpu, restore_reference

        model = model.to(self.device)
        apply_precision(model, self.precision)
        if self.cpu_fast and torch.device(self.device).type == "cpu":
            optimize_cpu(model)
        else:
            restore_reference(model)
        return model

    def autocast(self) -> ContextManager[Any]:
        return autocast_context(self.device, self.precision)


@dataclass(frozen=True, kw_only=True)
class OpenVinoBackend:
    """OpenVINO for the decoder on CPU: "bf16" (the opt-in `cpu_precision="bf16"`, see runtime.openvino) or
    "fp32"; the rest of the model stays in torch fp32."""

    precision: str = "bf16"

    def decoder(self, model: nn.Module) -> DecoderFn:
        """The OpenVINO decoder, compiled from the decoder's ONNX file in the cache root's onnx/ folder (exported
        once per weights and shape)."""
        from ..cache import folder
        from .onnx_export import export_decoder_onnx, model_hash
        from .openvino import OpenVinoDecoder

        spec = decoder_spec(model)
        path = folder("onnx") / f"decoder-{model_hash(model)}-{spec.face_size}-b{spec.batch}.onnx"
        if not path.exists():
            export_decoder_onnx(model, path)
        return OpenVinoDecoder(path, spec, precision=self.precision)


@dataclass(frozen=True, kw_only=True)
class TensorRTBackend:
    """TensorRT engine for the decoder (built once per identity, cached); torch elsewhere."""

    device_id: int = 0
    #: engine precision: "fp16" (default: the generator in fp16, SFT/CFA pinned to fp32 by the accuracy guard) or
    #: "fp32"
    precision: str = "fp16"
    workspace_gib: float = 4.0
    #: TensorRT builder optimisation level (0-5)
    opt_level: int = 3
    cache_dir: str | None = field(default=None, repr=False)
    force_rebuild: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not 0 <= self.opt_level <= 5:
            raise InputError(f"TensorRT opt_level must be 0..5, got {self.opt_level}")

    def fp32_layers(self) -> tuple[str, ...]:
        """ONNX scope fragments of decoder layers kept fp32 in an fp16 engine: the SFT/CFA fusion
        (runtime.precision.FP32_STAGES; the generator runs in fp16)."""
        from .precision import FP32_STAGES

        return ("fuse_convs_dict", "cross_fuse") if "fusion" in FP32_STAGES[self.precision] else ()

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
