"""The CUDA C++ text of the CuPy kernels, in one place, exactly as it is handed to NVRTC.

Why a module of its own: three consumers must see the same text. `cupy_impl` compiles it on the GPU; the CI test
compiles it with NVRTC for every supported architecture (`tests/test_cuda_sources.py`); and the host harness
(`tests/kernel_host.py`) compiles the very same text as C++ with g++ and runs it on real frames on the CPU. The
prelude therefore has one `#if` for the only thing the host cannot spell the CUDA way: the float <-> half
conversions, which on the device are single PTX instructions and on the host come from the harness.

Each kernel source is compiled as one module with all its template instantiations (`name_expressions`), so a
compile error shows up at the first call, for every dtype at once, not on the first frame of a rare dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CTYPES", "KernelSource", "cuda_sources", "kernel_source", "name_expression"]

PRELUDE = r"""
typedef unsigned char uint8_t_;
typedef unsigned short half_bits;
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
__device__ __forceinline__ float half_to_float(half_bits h) {
    float f; asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ half_bits float_to_half_rn(float v) {
    half_bits h; asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(v)); return h;
}
#else
__device__ __forceinline__ float half_to_float(half_bits h) { return host_half_to_float(h); }
__device__ __forceinline__ half_bits float_to_half_rn(float v) { return host_float_to_half_rn(v); }
#endif
__device__ __forceinline__ float load_f(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f(const uint8_t_* p, long long i) { return (float)p[i]; }
__device__ __forceinline__ float load_f(const half_bits* p, long long i) { return half_to_float(p[i]); }
__device__ __forceinline__ void store_f(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(half_bits* p, long long i, float v) { p[i] = float_to_half_rn(v); }
__device__ __forceinline__ void store_f(uint8_t_* p, long long i, float v) {
    p[i] = (uint8_t_)rintf(fminf(fmaxf(v, 0.0f), 255.0f));
}
__device__ __forceinline__ float lerp_rn(float a, float b, float t) {
    return __fadd_rn(a, __fmul_rn(t, __fsub_rn(b, a)));
}
// Bilinear taps of output pixel (u, v) under the affine map m (2x3, output -> source, cv2.warpAffine geometry)
// into a W x H source: top-left integer sample, fractions, and which of the four samples lie inside.
struct AffineTap { long long x0, y0; float fx, fy; bool ix0, ix1, iy0, iy1; };
__device__ __forceinline__ AffineTap affine_tap(const float* m, float u, float v, long long W, long long H) {
    AffineTap t;
    const float sx = __fadd_rn(__fadd_rn(__fmul_rn(m[0], u), __fmul_rn(m[1], v)), m[2]);
    const float sy = __fadd_rn(__fadd_rn(__fmul_rn(m[3], u), __fmul_rn(m[4], v)), m[5]);
    const float x0f = floorf(sx), y0f = floorf(sy);
    t.fx = __fsub_rn(sx, x0f); t.fy = __fsub_rn(sy, y0f);
    t.x0 = (long long)x0f; t.y0 = (long long)y0f;
    t.ix0 = t.x0 >= 0 && t.x0 < W; t.ix1 = t.x0 + 1 >= 0 && t.x0 + 1 < W;
    t.iy0 = t.y0 >= 0 && t.y0 < H; t.iy1 = t.y0 + 1 >= 0 && t.y0 + 1 < H;
    return t;
}
"""

FLOW_WARP = r"""
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

AFFINE_CROP = r"""
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
    const AffineTap t = affine_tap(coef + n * 6, (float)u, (float)v, W, H);
    const long long x0 = t.x0, y0 = t.y0;
    const float fx = t.fx, fy = t.fy;
    const bool ix0 = t.ix0, ix1 = t.ix1, iy0 = t.iy0, iy1 = t.iy1;
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

PASTE_BLEND = r"""
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
    const AffineTap t = affine_tap(m, (float)x, (float)y, S, S);
    const long long x0 = t.x0, y0 = t.y0;
    const float fx = t.fx, fy = t.fy;
    const bool ix0 = t.ix0, ix1 = t.ix1, iy0 = t.iy0, iy1 = t.iy1;
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

#: C++ spelling of each tensor dtype a kernel accepts (template arguments)
CTYPES = {torch.float32: "float", torch.float16: "half_bits", torch.uint8: "uint8_t_"}

_FLOAT = (torch.float32, torch.float16)
_ANY = (torch.float32, torch.float16, torch.uint8)

#: kernel name -> (body, dtype tuples of every instantiation the dispatcher can request)
_KERNELS: dict[str, tuple[str, tuple[tuple[torch.dtype, ...], ...]]] = {
    "flow_warp": (FLOW_WARP, tuple((t,) for t in _FLOAT)),
    "affine_crop": (AFFINE_CROP, tuple((i, o) for i in _ANY for o in _FLOAT)),
    "paste_blend": (PASTE_BLEND, tuple((t,) for t in _ANY)),
}

#: options handed to NVRTC with every source
NVRTC_OPTIONS = ("--std=c++14",)


@dataclass(frozen=True)
class KernelSource:
    """One NVRTC module: its name, its full text and all its template instantiations."""

    name: str
    source: str
    name_expressions: tuple[str, ...]
    dtypes: tuple[tuple[torch.dtype, ...], ...]


def name_expression(name: str, *dtypes: torch.dtype) -> str:
    """`name<ctype, ...>` for the given tensor dtypes (what NVRTC and CuPy look the kernel up by)."""
    return f"{name}<{', '.join(CTYPES[t] for t in dtypes)}>"


def kernel_source(name: str, body: str | None = None) -> KernelSource:
    """The module for kernel `name`; `body` replaces the kernel text (tests feed broken sources through it)."""
    if name not in _KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(_KERNELS)}")
    text, dtypes = _KERNELS[name]
    return KernelSource(
        name=name,
        source=PRELUDE + (text if body is None else body),
        name_expressions=tuple(name_expression(name, *d) for d in dtypes),
        dtypes=dtypes,
    )


def cuda_sources() -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, source, name_expressions) of every CUDA module: the exact text handed to NVRTC and every template
    instantiation the dispatcher can request."""
    return [(k.name, k.source, k.name_expressions) for k in (kernel_source(n) for n in _KERNELS)]
