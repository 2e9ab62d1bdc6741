"""CuPy (CUDA) twins of the torch kernels: flow warp, affine crop, fused paste-back blend.

Why CuPy: small custom kernels without a build step, compiled by NVRTC on first use and cached by CuPy on disk.
Rules this module follows (KEEP's own CuPy code broke all of them):
- nothing CUDA-related happens at import: `cupy` is imported and kernels are compiled on the first call;
- kernels run on torch's *current* stream, looked up at call time (`cupy.cuda.ExternalStream`), so they order
  correctly with the surrounding torch ops and CUDA graphs/streams chosen by the caller;
- shapes, strides and dtypes are kernel arguments or template parameters (float32 / float16 / uint8 inputs), never
  baked into the source text per call.
Numerics: the crop and paste kernels spell out the torch twins' float32 steps with non-contracting intrinsics
(__fmul_rn, __fadd_rn, __fsub_rn), so they round the same way; the flow warp follows grid_sample's own arithmetic.

Each `*_kernel` function marshals its arguments exactly like a CUDA launch (pointers, strides, numpy scalars)
and hands them to a `Launch`: `cupy_launch` on the GPU, or the g++ host harness of the tests, which runs the same
source text on the CPU with the same arguments.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .sources import NVRTC_OPTIONS, kernel_source, name_expression

__all__ = ["Launch", "affine_crop_cupy", "cupy_launch", "flow_warp_cupy", "paste_blend_cupy"]

THREADS = 256

#: launch(kernel name, name expression, total threads, device, kernel arguments)
Launch = Callable[[str, str, int, torch.device, tuple[Any, ...]], None]

_LOCK = threading.Lock()
_MODULES: dict[tuple[str, int], Any] = {}


def _module(name: str, device_index: int) -> Any:
    """The compiled module of kernel `name` with all its instantiations (once per process and device)."""
    import cupy  # lazy: engine imports must not need CuPy

    key = (name, device_index)
    with _LOCK:
        if key not in _MODULES:
            src = kernel_source(name)
            module = cupy.RawModule(code=src.source, options=NVRTC_OPTIONS, name_expressions=src.name_expressions)
            module.compile()  # all instantiations now: a compile error surfaces here, once
            _MODULES[key] = module
        return _MODULES[key]


def cupy_launch(name: str, expr: str, total: int, device: torch.device, args: tuple[Any, ...]) -> None:
    """Launch `expr` of kernel `name` on torch's current stream of `device` (looked up now, not at import)."""
    import cupy

    if total <= 0:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream_ptr = torch.cuda.current_stream(device).cuda_stream
    with cupy.cuda.Device(index):
        kernel = _module(name, index).get_function(expr)
        with cupy.cuda.ExternalStream(stream_ptr):  # kernels launch on CuPy's current stream
            blocks = (total + THREADS - 1) // THREADS
            kernel((blocks,), (THREADS,), args)


def _ptr(t: Tensor) -> np.uint64:
    return np.uint64(t.data_ptr())


def flow_warp_cupy(x: Tensor, flow: Tensor, launch: Launch = cupy_launch) -> Tensor:
    """CUDA twin of `flow_warp_torch` for float32/float16 x (N, C, H, W) and flow (N, 2, H, W)."""
    x = x.contiguous()
    flow = flow.to(torch.float32).contiguous()
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    inv_wm1 = np.float32(1.0) / np.float32(max(w - 1, 1))
    inv_hm1 = np.float32(1.0) / np.float32(max(h - 1, 1))
    launch(
        "flow_warp", name_expression("flow_warp", x.dtype), n * h * w, x.device,
        (_ptr(x), _ptr(flow), _ptr(out), np.int32(n), np.int32(c), np.int32(h), np.int32(w), inv_wm1, inv_hm1),
    )
    return out


def affine_crop_cupy(
    src_chw: Tensor, coef: Tensor, fill: Tensor, size: int, scale: float, offset: float, out_dtype: torch.dtype,
    launch: Launch = cupy_launch,
) -> Tensor:
    """CUDA twin of `affine_crop_torch`: src_chw is any strided (C, H, W) view (uint8/float16/float32), coef (N, 6)
    float32 and fill (C,) float32 on the same device."""
    c, h, w = src_chw.shape
    n = coef.shape[0]
    out = torch.empty((n, c, size, size), dtype=out_dtype, device=src_chw.device)
    s_c, s_h, s_w = src_chw.stride()
    apply = int(scale != 1.0 or offset != 0.0)
    launch(
        "affine_crop", name_expression("affine_crop", src_chw.dtype, out_dtype), n * size * size, src_chw.device,
        (_ptr(src_chw), np.int64(s_c), np.int64(s_h), np.int64(s_w), np.int32(c), np.int32(h), np.int32(w), _ptr(coef),
         _ptr(fill), np.int32(n), np.int32(size), np.float32(scale), np.float32(offset), np.int32(apply), _ptr(out)),
    )
    return out


def paste_blend_cupy(
    canvas_chw: Tensor, face: Tensor, coef: Tensor, box: tuple[int, int, int, int], eroded: Tensor, soft: Tensor,
    unit: float, launch: Launch = cupy_launch,
) -> Tensor:
    """CUDA twin of `paste_blend_torch`: blends face (C, S, S) float32 into the strided (C, H, W) canvas view in
    place over `box` and returns it; coef (6,) float32, eroded/soft (h, w) float32 contiguous, all on its device."""
    x0, y0, x1, y1 = box
    c = canvas_chw.shape[0]
    s_c, s_h, s_w = canvas_chw.stride()
    launch(
        "paste_blend", name_expression("paste_blend", canvas_chw.dtype), (x1 - x0) * (y1 - y0), canvas_chw.device,
        (_ptr(canvas_chw), np.int64(s_c), np.int64(s_h), np.int64(s_w), np.int32(c), np.int32(x0), np.int32(y0),
         np.int32(x1 - x0), np.int32(y1 - y0), _ptr(face), np.int32(face.shape[-1]), _ptr(coef), _ptr(eroded), _ptr(soft),
         np.float32(unit)),
    )
    return canvas_chw
