"""Accuracy of fp16 on CPUs without native 16-bit GEMMs, for the bench's precision sweep and the fp16 policy test.

Why: without native fp16 GEMMs oneDNN falls back to reference kernels ~100x slower than fp32, so a real fp16 run
of the full model is unaffordable there. `EmulatedLowPrecision` runs the GEMM-class ops in fp32 on inputs rounded
to fp16 (or bf16) and rounds their outputs back, which is what native kernels do (low-precision operands, fp32
accumulation, rounded result), so the accuracy guard (`runtime.precision.FP32_STAGES`) can be measured anywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ..runtime.precision import cast_floats

__all__ = ["EmulatedLowPrecision"]

_aten = torch.ops.aten
#: ops that native bf16/fp16 kernels run with low-precision operands, fp32 accumulation and a rounded result
_GEMM_OPS = {
    _aten.conv1d.default, _aten.conv2d.default, _aten.convolution.default, _aten._convolution.default,
    _aten.linear.default, _aten.matmul.default, _aten.mm.default, _aten.bmm.default, _aten.addmm.default,
    _aten.baddbmm.default, _aten.addbmm.default, _aten.scaled_dot_product_attention.default,
}


class EmulatedLowPrecision(TorchDispatchMode):
    """Run GEMM-class ops that receive bf16/fp16 tensors in fp32 and round the result back to that dtype.

    Use inside `autocast_context("cpu", precision)`. Other ops (norms, softmax, element-wise) run natively in the
    low dtype, as under real autocast. Differences from native kernels: accumulation order, and fused attention
    kernels that round their probabilities to 16 bits before the second GEMM (not reproduced: slightly optimistic).
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _GEMM_OPS:
            low = [a.dtype for a in args if isinstance(a, Tensor) and a.dtype in (torch.bfloat16, torch.float16)]
            if low:
                return cast_floats(func(*cast_floats(list(args)), **cast_floats(kwargs)), low[0])
        return func(*args, **kwargs)
