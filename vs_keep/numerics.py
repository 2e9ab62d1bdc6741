"""Precision rules shared by the models and the kernels, and the numerics identity of a run.

Why one rule: some steps (GMFlow's 4096-way softmaxes and expected coordinates, the flow warp's pixel coordinates)
lose sub-pixel accuracy in 16-bit floats, so they run in float32 when the model is fp16/bf16. They must not
*lower* the precision either: a float64 model is the exact reference (tests compare it with the official maths
in float64 to 1e-9), so float64 stays float64. Hence "at least float32".

The numerics identity (`numerics_identity`) lists everything that decides float32 output bits besides the
inputs and options: two runs with equal identities give the same frames.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import InputError
from .runtime.cpu_choice import RULE_VERSION, active_rule, isa_class

__all__ = ["at_least_float32", "numerics_identity"]


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype precision-critical steps compute in: float32 for 16-bit (and smaller) floats, else `dtype`."""
    if not dtype.is_floating_point:
        raise InputError(f"at_least_float32: dtype must be a floating point dtype, got {dtype}")
    return torch.promote_types(dtype, torch.float32)


def numerics_identity(device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                      cpu_fast: bool = True) -> dict[str, Any]:
    """What decides the output bits of a run besides its inputs and options. On CPU: the ISA class and the kernel
    rule (version) of `runtime.cpu_choice`, the torch version and torch's intra-op thread count (`threads`,
    default the calling thread's; `cpu_fast=False`: the reference ops, no rule); VapourSynth's core.num_threads is not part of it. On CUDA: the GPU and the
    CUDA/cuDNN versions."""
    ident: dict[str, Any] = {"device": device, "precision": precision, "torch": torch.__version__}
    if torch.device(device).type == "cpu":
        ident.update(isa_class=isa_class(), kernel_rule=active_rule().name if cpu_fast else "reference-ops", kernel_rule_version=RULE_VERSION,
                     torch_threads=int(threads or torch.get_num_threads()))
    elif torch.device(device).type == "cuda":
        ident.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version())
    return ident
