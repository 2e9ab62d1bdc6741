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
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["affine_crop_cupy", "flow_warp_cupy", "paste_blend_cupy"]

_THREADS = 256

_PRELUDE = r"""
typedef unsigned char uint8_t_;
typedef unsigned short half_bits;
__device__ __forceinline__ float load_f(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f(const uint8_t_* p, long long i) { return (float)p[i]; }
__device__ __forceinline__ float load_f(const half_bits* p, long long i) {
    float f; asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(p[i])); return f;
}
__device__ __forceinline__ void store_f(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(half_bits* p, long long i, float v) {
    half_bits h; asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(v)); p[i] = h;
}
__device__ __forceinline__ void store_f(uint8_t_* p, long long i, float v) {
    p[i] = (uint8_t_)rintf(fminf(fmaxf(v, 0.0f), 255.0f));
}
__device__ __forceinline__ float lerp_rn(float a, float b, float t) {
    return __fadd_rn(a, __fmul_rn(t, __fsub_rn(b, a)));
}
"""

_FLOW_WARP = r"""
template <typename T>
__global__ void flow_warp(const unsigned long long x_ptr, const unsigned long long flow_ptr, const unsigned long long out_ptr,
                          const int N, const int C, const int H, const int W, const float inv_wm1, const float inv_hm1) {
    const T* x = (const T*)x_ptr; const float* flow = (const float*)flow_ptr; T* out = (T*)out_ptr;
    const long long hw = (long long)H * W;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * hw) return;
    const int px = (int)(idx % W);
    const int py = (int)((idx / W) % H);
    const long long n = idx / hw;
    const long long pix = (long long)py * W + px;
    // the torch twin: sx = x + dx; g = 2*sx/(W-1) - 1 (torch CUDA divides by a scalar as a multiply by 1/(W-1));
    // grid_sample (align_corners=True) then unnormalises: ((g + 1) / 2) * (W - 1)
    const float sx = __fadd_rn((float)px, flow[(n * 2) * hw + pix]);
    const float sy = __fadd_rn((float)py, flow[(n * 2 + 1) * hw + pix]);
    const float gx = __fsub_rn(__fmul_rn(__fmul_rn(2.0f, sx), inv_wm1), 1.0f);
    const float gy = __fsub_rn(__fmul_rn(__fmul_rn(2.0f, sy), inv_hm1), 1.0f);
    const float ix = ((gx + 1.f) / 2) * (W - 1);
    const float iy = ((gy + 1.f) / 2) * (H - 1);
    const int ix_nw = (int)floorf(ix), iy_nw = (int)floorf(iy);
    const int ix_ne = ix_nw + 1, iy_ne = iy_nw;
    const int ix_sw = ix_nw, iy_sw = iy_nw + 1;
    const int ix_se = ix_nw + 1, iy_se = iy_nw + 1;
    const float nw = (ix_se - ix) * (iy_se - iy);
    const float ne = (ix - ix_sw) * (iy_sw - iy);
    const float sw = (ix_ne - ix) * (iy - iy_ne);
    const float se = (ix - ix_nw) * (iy - iy_nw);
    const bool in_nw = ix_nw >= 0 && ix_nw < W && iy_nw >= 0 && iy_nw < H;
    const bool in_ne = ix_ne >= 0 && ix_ne < W && iy_ne >= 0 && iy_ne < H;
    const bool in_sw = ix_sw >= 0 && ix_sw < W && iy_sw >= 0 && iy_sw < H;
    const bool in_se = ix_se >= 0 && ix_se < W && iy_se >= 0 && iy_se < H;
    for (int c = 0; c < C; ++c) {
        const long long base = (n * C + c) * hw;
        float acc = 0.f;
        if (in_nw) acc += load_f(x, base + (long long)iy_nw * W + ix_nw) * nw;
        if (in_ne) acc += load_f(x, base + (long long)iy_ne * W + ix_ne) * ne;
        if (in_sw) acc += load_f(x, base + (long long)iy_sw * W + ix_sw) * sw;
        if (in_se) acc += load_f(x, base + (long long)iy_se * W + ix_se) * se;
        store_f(out, base + pix, acc);
    }
}
"""

_AFFINE_CROP = r"""
template <typename TIN, typename TOUT>
__global__ void affine_crop(const unsigned long long src_ptr, const long long s_c, const long long s_h, const long long s_w,
                            const int C, const int H, const int W, const unsigned long long coef_ptr,
                            const unsigned long long fill_ptr, const int N, const int S, const float scale,
                            const float offset, const int apply_affine, const unsigned long long out_ptr) {
    const TIN* src = (const TIN*)src_ptr; const float* coef = (const float*)coef_ptr;
    const float* fill = (const float*)fill_ptr; TOUT* out = (TOUT*)out_ptr;
    const long long ss = (long long)S * S;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * ss) return;
    const int u = (int)(idx % S);
    const int v = (int)((idx / S) % S);
    const long long n = idx / ss;
    const float* m = coef + n * 6;
    const float fu = (float)u, fv = (float)v;
    const float sx = __fadd_rn(__fadd_rn(__fmul_rn(m[0], fu), __fmul_rn(m[1], fv)), m[2]);
    const float sy = __fadd_rn(__fadd_rn(__fmul_rn(m[3], fu), __fmul_rn(m[4], fv)), m[5]);
    const float x0f = floorf(sx), y0f = floorf(sy);
    const float fx = __fsub_rn(sx, x0f), fy = __fsub_rn(sy, y0f);
    const long long x0 = (long long)x0f, y0 = (long long)y0f;
    const bool ix0 = x0 >= 0 && x0 < W, ix1 = x0 + 1 >= 0 && x0 + 1 < W;
    const bool iy0 = y0 >= 0 && y0 < H, iy1 = y0 + 1 >= 0 && y0 + 1 < H;
    for (int c = 0; c < C; ++c) {
        const long long b = c * s_c;
        const float f = fill[c];
        const float v00 = (iy0 && ix0) ? load_f(src, b + y0 * s_h + x0 * s_w) : f;
        const float v01 = (iy0 && ix1) ? load_f(src, b + y0 * s_h + (x0 + 1) * s_w) : f;
        const float v10 = (iy1 && ix0) ? load_f(src, b + (y0 + 1) * s_h + x0 * s_w) : f;
        const float v11 = (iy1 && ix1) ? load_f(src, b + (y0 + 1) * s_h + (x0 + 1) * s_w) : f;
        float r = lerp_rn(lerp_rn(v00, v01, fx), lerp_rn(v10, v11, fx), fy);
        if (apply_affine) r = __fadd_rn(__fmul_rn(r, scale), offset);
        store_f(out, ((n * C + c) * S + v) * (long long)S + u, r);
    }
}
"""

_PASTE_BLEND = r"""
template <typename TC>
__global__ void paste_blend(const unsigned long long canvas_ptr, const long long s_c, const long long s_h, const long long s_w,
                            const int C, const int bx0, const int by0, const int bw, const int bh,
                            const unsigned long long face_ptr, const int S, const unsigned long long coef_ptr,
                            const unsigned long long eroded_ptr, const unsigned long long soft_ptr, const float unit) {
    TC* canvas = (TC*)canvas_ptr; const float* face = (const float*)face_ptr; const float* m = (const float*)coef_ptr;
    const float* eroded = (const float*)eroded_ptr; const float* soft = (const float*)soft_ptr;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)bw * bh) return;
    const int x = bx0 + (int)(idx % bw);
    const int y = by0 + (int)(idx / bw);
    const float fxp = (float)x, fyp = (float)y;
    const float qx = __fadd_rn(__fadd_rn(__fmul_rn(m[0], fxp), __fmul_rn(m[1], fyp)), m[2]);
    const float qy = __fadd_rn(__fadd_rn(__fmul_rn(m[3], fxp), __fmul_rn(m[4], fyp)), m[5]);
    const float x0f = floorf(qx), y0f = floorf(qy);
    const float fx = __fsub_rn(qx, x0f), fy = __fsub_rn(qy, y0f);
    const long long x0 = (long long)x0f, y0 = (long long)y0f;
    const bool ix0 = x0 >= 0 && x0 < S, ix1 = x0 + 1 >= 0 && x0 + 1 < S;
    const bool iy0 = y0 >= 0 && y0 < S, iy1 = y0 + 1 >= 0 && y0 + 1 < S;
    const float e = eroded[idx], a = soft[idx];
    const float one_minus_a = __fsub_rn(1.0f, a);
    const long long ss = (long long)S * S;
    for (int c = 0; c < C; ++c) {
        const float* f = face + c * ss;
        const float v00 = (iy0 && ix0) ? f[y0 * S + x0] : 0.f;
        const float v01 = (iy0 && ix1) ? f[y0 * S + x0 + 1] : 0.f;
        const float v10 = (iy1 && ix0) ? f[(y0 + 1) * S + x0] : 0.f;
        const float v11 = (iy1 && ix1) ? f[(y0 + 1) * S + x0 + 1] : 0.f;
        const float r = lerp_rn(lerp_rn(v00, v01, fx), lerp_rn(v10, v11, fx), fy);
        const float pasted = __fmul_rn(__fmul_rn(e, r), unit);
        const long long o = c * s_c + (long long)y * s_h + (long long)x * s_w;
        const float old = load_f(canvas, o);
        store_f(canvas, o, __fadd_rn(__fmul_rn(a, pasted), __fmul_rn(one_minus_a, old)));
    }
}
"""

_CTYPES = {torch.float32: "float", torch.float16: "half_bits", torch.uint8: "uint8_t_"}
_LOCK = threading.Lock()
_MODULES: dict[tuple[str, ...], Any] = {}


def _kernel(source: str, name: str, *types: torch.dtype) -> Any:
    """The compiled `name<types...>` kernel (compiled once per process; CuPy also caches the binary on disk)."""
    import cupy  # lazy: engine imports must not need CuPy

    expr = f"{name}<{', '.join(_CTYPES[t] for t in types)}>"
    key = (name, expr)
    with _LOCK:
        if key not in _MODULES:
            module = cupy.RawModule(code=_PRELUDE + source, options=("--std=c++14",), name_expressions=(expr,))
            _MODULES[key] = module.get_function(expr)
        return _MODULES[key]


def _launch(kernel: Any, total: int, device: torch.device, args: tuple[Any, ...]) -> None:
    """Launch on torch's current stream of `device` (looked up now, not at import)."""
    import cupy

    if total <= 0:
        return
    stream_ptr = torch.cuda.current_stream(device).cuda_stream
    with cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device()):
        with cupy.cuda.ExternalStream(stream_ptr):  # kernels launch on CuPy's current stream
            blocks = (total + _THREADS - 1) // _THREADS
            kernel((blocks,), (_THREADS,), args)


def _ptr(t: Tensor) -> np.uint64:
    return np.uint64(t.data_ptr())


def flow_warp_cupy(x: Tensor, flow: Tensor) -> Tensor:
    """CUDA twin of `flow_warp_torch` for float32/float16 x (N, C, H, W) and flow (N, 2, H, W)."""
    x = x.contiguous()
    flow = flow.to(torch.float32).contiguous()
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    inv_wm1 = np.float32(1.0) / np.float32(max(w - 1, 1))
    inv_hm1 = np.float32(1.0) / np.float32(max(h - 1, 1))
    k = _kernel(_FLOW_WARP, "flow_warp", x.dtype)
    _launch(k, n * h * w, x.device, (_ptr(x), _ptr(flow), _ptr(out), np.int32(n), np.int32(c), np.int32(h), np.int32(w), inv_wm1, inv_hm1))
    return out


def affine_crop_cupy(
    src_chw: Tensor, coef: Tensor, fill: Tensor, size: int, scale: float, offset: float, out_dtype: torch.dtype
) -> Tensor:
    """CUDA twin of `affine_crop_torch`: src_chw is any strided (C, H, W) view (uint8/float16/float32), coef (N, 6)
    float32 and fill (C,) float32 on the same device."""
    c, h, w = src_chw.shape
    n = coef.shape[0]
    out = torch.empty((n, c, size, size), dtype=out_dtype, device=src_chw.device)
    s_c, s_h, s_w = src_chw.stride()
    apply = int(scale != 1.0 or offset != 0.0)
    k = _kernel(_AFFINE_CROP, "affine_crop", src_chw.dtype, out_dtype)
    _launch(
        k, n * size * size, src_chw.device,
        (_ptr(src_chw), np.int64(s_c), np.int64(s_h), np.int64(s_w), np.int32(c), np.int32(h), np.int32(w), _ptr(coef),
         _ptr(fill), np.int32(n), np.int32(size), np.float32(scale), np.float32(offset), np.int32(apply), _ptr(out)),
    )
    return out


def paste_blend_cupy(
    canvas_chw: Tensor, face: Tensor, coef: Tensor, box: tuple[int, int, int, int], eroded: Tensor, soft: Tensor, unit: float
) -> None:
    """CUDA twin of `paste_blend_torch`: blends face (C, S, S) float32 into the strided (C, H, W) canvas view in
    place over `box`; coef (6,) float32, eroded/soft (h, w) float32 contiguous, all on the canvas's device."""
    x0, y0, x1, y1 = box
    c = canvas_chw.shape[0]
    s_c, s_h, s_w = canvas_chw.stride()
    k = _kernel(_PASTE_BLEND, "paste_blend", canvas_chw.dtype)
    _launch(
        k, (x1 - x0) * (y1 - y0), canvas_chw.device,
        (_ptr(canvas_chw), np.int64(s_c), np.int64(s_h), np.int64(s_w), np.int32(c), np.int32(x0), np.int32(y0),
         np.int32(x1 - x0), np.int32(y1 - y0), _ptr(face), np.int32(face.shape[-1]), _ptr(coef), _ptr(eroded), _ptr(soft),
         np.float32(unit)),
    )
