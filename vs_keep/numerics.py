"""Precision rules shared by the models and the kernels.

Why one rule: some steps (GMFlow's 4096-way softmaxes and expected coordinates, the flow warp's pixel coordinates)
lose sub-pixel accuracy in 16-bit floats, so they run in float32 when the model is fp16/bf16. They must not
*lower* the precision either: a float64 model is the exact reference (tests compare it with the official maths
in float64 to 1e-9), so float64 stays float64. Hence "at least float32".
"""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["at_least_float32"]


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype precision-critical steps compute in: float32 for 16-bit (and smaller) floats, else `dtype`."""
    if not dtype.is_floating_point:
        raise InputError(f"at_least_float32: dtype must be a floating point dtype, got {dtype}")
    return torch.promote_types(dtype, torch.float32)
