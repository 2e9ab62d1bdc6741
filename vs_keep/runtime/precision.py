"""Reduced precision (fp16 autocast, `fp16=True` on CUDA) for KEEP's stages, with the stages that break kept in fp32.

Why a policy and not `model.half()`: two places in KEEP are precision-critical. GMFlow's 4096-way correlation
softmax and expected coordinates lose sub-pixel accuracy in 16-bit floats (gmflow.py already computes them in
fp32 whatever the input dtype), and the codebook argmax has top-1/top-2 logit margins down to 5e-5. So callers
run the model under `autocast_context(device, precision)` and `apply_precision(model, precision)` turns the
stages listed in `FP32_STAGES[precision]` into fp32 islands: their inputs are cast to fp32 and autocast is off
inside them. fp32 (the default) changes nothing. There is no torch bf16: it failed the guard in every stage
(see `FP32_STAGES`); the opt-in CPU bf16 runs KEEP's decoder in OpenVINO (`runtime.openvino`).

`FP32_STAGES` comes from measurements on the golden fixture (full-size KEEP, synthetic weights; `vs-keep bench`
prints them again): see the comments there. Synthetic weights make KEEP's recurrence chaotic (one flipped code
changes the next frame by ~13 %), so this guard is strict; real weights are likely better conditioned.

CPUs without native fp16 GEMMs (oneDNN then falls back to reference kernels ~100x slower than fp32) cannot afford
a real fp16 run of the full model; the bench measures accuracy there by emulation (`vs_keep.bench.emulation`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from ..errors import InputError

__all__ = [
    "FP32_STAGES",
    "PRECISIONS",
    "STAGE_MODULES",
    "apply_precision",
    "autocast_context",
    "cast_floats",
    "check_precision",
    "native_fp16_cpu",
]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

#: KEEP's stages -> the (dotted) attribute paths of the modules that implement them; containers mean each of
#: their children (the generator's blocks are called one by one by `decode`, never through `generator.forward`).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "flow": ("flownet",),
    "encoders": ("encoder.blocks", "hq_encoder.blocks"),
    "gains": ("kalman_filter",),
    "transformer": ("feat_emb", "ft_layers", "idx_pred_layer"),
    "generator": ("generator.blocks",),
    "fusion": ("fuse_convs_dict", "cross_fuse"),
}

#: Stages kept in fp32 per precision: the accuracy guard. Measured on the golden fixture (full-size KEEP, synthetic
#: weights, 3 frames; 16-bit GEMMs emulated on an AVX2 CPU, see the module doc), codebook-index agreement per frame
#: with one stage at a time in 16 bits (fp32 itself: 1.0 / 1.0 / 0.996, one knife-edge code at frame 2):
#:   fp16: generator 1.0/1.0/0.996 and gains 1.0/1.0/0.996 (= fp32); encoders 1.0/0.996/0.746, SFT+CFA fusion
#:         1.0/0.996/0.742, transformer and all-but-flow worse: a few flipped codes at frame 1 are amplified by the
#:         recurrence (warp -> HQ encoder -> Kalman mix) into a different frame 2.
#:   bf16 (torch autocast, measured the same way and then removed): every stage fails on its own (gains
#:         1.0/0.992/0.844, generator 1.0/0.980/0.691, transformer 0.984/0.742/0.355): its 8-bit mantissa is too
#:         coarse for the argmax and the recurrence.
#: So fp16 runs the generator (35 % of the FLOPs) and the gain net in fp16.
FP32_STAGES: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("flow", "encoders", "transformer", "fusion"),
}


def check_precision(precision: str) -> None:
    """The one validator of a torch / TensorRT precision name."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def native_fp16_cpu() -> bool:
    """Whether this CPU has fast native fp16 kernels (oneDNN's fp16 support; else the bench emulates fp16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_context(device: str | torch.device, precision: str) -> ContextManager[Any]:
    """`torch.autocast` for fp16 on `device`; a no-op context for fp32."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.float16)


# ---- fp32 islands ----------------------------------------------------------------------------------------------


def cast_floats(value: Any, dtype: torch.dtype = torch.float32) -> Any:
    """Floating tensors (also inside tuples, lists and dicts) cast to `dtype`; everything else as it is."""
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: cast_floats(v, dtype) for k, v in value.items()}
    return value


class _Fp32Island:
    """Mixin placed in front of a module's class: fp32 inputs, autocast off inside."""

    _island_base: type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        param = next(self.parameters(), None)  # type: ignore[attr-defined]
        device_type = param.device.type if param is not None else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return super().forward(*cast_floats(args), **cast_floats(kwargs))  # type: ignore[misc]


@functools.cache  # one island class per module class
def _island_class(cls: type) -> type:
    return type(f"Fp32{cls.__name__}", (_Fp32Island, cls), {"_island_base": cls})


def _stage_modules(model: nn.Module, stage: str) -> Iterator[nn.Module]:
    if stage not in STAGE_MODULES:
        raise InputError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_MODULES)}")
    for name in STAGE_MODULES[stage]:
        sub: object = model
        for part in name.split("."):
            sub = getattr(sub, part, None)
        if isinstance(sub, (nn.ModuleList, nn.ModuleDict)):
            yield from sub.children()
        elif isinstance(sub, nn.Module):
            yield sub


def apply_precision(model: nn.Module, precision: str, fp32_stages: tuple[str, ...] | None = None) -> nn.Module:
    """Mark the fp32 stages of `model` (in place) for running under `autocast_context(device, precision)`.

    fp32_stages: override of `FP32_STAGES[precision]` (the benchmark uses it to measure each stage). Calling it
    again replaces the previous marking; "fp32" removes all marks. Parameters stay fp32 (autocast casts them per op).
    """
    check_precision(precision)
    keep = FP32_STAGES[precision] if fp32_stages is None else tuple(fp32_stages)
    for module in model.modules():  # clear earlier marks
        if isinstance(module, _Fp32Island):
            module.__class__ = module._island_base
    if precision == "fp32":
        return model
    for stage in keep:
        for module in _stage_modules(model, stage):
            module.__class__ = _island_class(type(module))
    return model
