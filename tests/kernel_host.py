"""Run the CUDA kernel sources on the CPU: the exact text handed to NVRTC, compiled as C++ by g++.

How: a small shim defines what the kernels use from CUDA (`__global__`/`__device__`, `threadIdx`/`blockIdx`/
`blockDim`, the round-to-nearest intrinsics `__fadd_rn`/`__fmul_rn`/`__fsub_rn`, `floorf`/`rintf`/`fminf`/`fmaxf`
and the two half conversions the prelude takes from the host), then the source follows unchanged, then one
`extern "C"` launcher per template instantiation loops over the grid (blocks x threads, like a launch of
`cupy_impl.THREADS` threads per block) and unpacks a `void**` argument array like cuLaunchKernel does. `HostLaunch`
is a `cupy_impl.Launch`, so the same argument marshalling code (`cupy_impl.*_cupy(..., launch=...)`) drives it.

g++ runs with -O1 -ffp-contract=off and no fast-math: every float op rounds like the device's `_rn` intrinsics.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvrtc_compile import KernelCompileError, compile_cubin
from vs_keep.kernels.cupy_impl import THREADS
from vs_keep.kernels.sources import KernelSource, kernel_source

SHIM = r"""
#include <math.h>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <utility>
#include <type_traits>
struct dim3_ { unsigned int x, y, z; };
static dim3_ threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float host_half_to_float(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
static inline unsigned short host_float_to_half_rn(float f) { _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h; }
"""

LAUNCH = r"""
template <typename... A, std::size_t... I>
static void call_with(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<typename std::remove_cv<A>::type*>(p[I])...);
}
template <typename... A>
static void run_grid(void (*k)(A...), unsigned int blocks, unsigned int threads, void** p) {
    blockDim = {threads, 1, 1}; gridDim = {blocks, 1, 1};
    for (unsigned int b = 0; b < blocks; ++b)
        for (unsigned int t = 0; t < threads; ++t) {
            blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0};
            call_with(k, p, std::index_sequence_for<A...>{});
        }
}
"""

_CTYPE = {np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.int64): ctypes.c_int64, np.dtype(np.int32): ctypes.c_int32,
          np.dtype(np.float32): ctypes.c_float}


def compiler() -> str | None:
    return shutil.which("g++")


def harness_text(src: KernelSource) -> str:
    """The translation unit: shim, the kernel source exactly as NVRTC gets it, one launcher per instantiation."""
    launchers = "".join(
        f'extern "C" void launch_{i}(unsigned int blocks, unsigned int threads, void** p) {{ run_grid(&{expr}, blocks, threads, p); }}\n'
        for i, expr in enumerate(src.name_expressions)
    )
    return SHIM + src.source + LAUNCH + launchers


class HostModule:
    """A kernel source compiled for the CPU (one shared library, cached by text hash for the session)."""

    _cache: dict[str, "HostModule"] = {}

    def __init__(self, src: KernelSource, workdir: Path) -> None:
        text = harness_text(src)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        so = workdir / f"{src.name}-{digest}.so"
        if not so.exists():
            cpp = so.with_suffix(".cpp")
            cpp.write_text(text)
            cmd = [compiler() or "g++", "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
                   "-o", str(so), str(cpp)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                raise KernelCompileError(f"g++ could not compile {src.name}:\n{res.stderr[-4000:]}")
        self.lib = ctypes.CDLL(str(so))
        self.index = {expr: i for i, expr in enumerate(src.name_expressions)}

    @classmethod
    def get(cls, src: KernelSource, workdir: Path) -> "HostModule":
        key = hashlib.sha256(src.source.encode()).hexdigest()
        if key not in cls._cache:
            cls._cache[key] = HostModule(src, workdir)
        return cls._cache[key]

    def launch(self, expr: str, total: int, args: tuple[Any, ...]) -> None:
        if total <= 0:
            return
        if expr not in self.index:
            raise KernelCompileError(f"{expr} is not an instantiation of this module ({', '.join(self.index)})")
        boxed = [_CTYPE[np.asarray(a).dtype](a.item() if hasattr(a, "item") else a) for a in args]
        params = (ctypes.c_void_p * len(boxed))(*(ctypes.cast(ctypes.pointer(b), ctypes.c_void_p) for b in boxed))
        blocks = (total + THREADS - 1) // THREADS
        getattr(self.lib, f"launch_{self.index[expr]}")(ctypes.c_uint(blocks), ctypes.c_uint(THREADS), params)


class HostLaunch:
    """A `cupy_impl.Launch` that runs the kernels on CPU tensors; `bodies` replace kernel texts (broken sources)."""

    def __init__(self, bodies: dict[str, str] | None = None, workdir: str | Path | None = None) -> None:
        self.bodies = dict(bodies or {})
        self.workdir = Path(workdir or tempfile.gettempdir()) / "vs-keep-kernel-host"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def source(self, name: str) -> KernelSource:
        return kernel_source(name, self.bodies.get(name))

    def __call__(self, name: str, expr: str, total: int, device: torch.device, args: tuple[Any, ...]) -> None:
        if device.type != "cpu":
            raise ValueError(f"the host harness runs CPU tensors only, got {device}")
        HostModule.get(self.source(name), self.workdir).launch(expr, total, args)


class NvrtcThenHost(HostLaunch):
    """What a GPU does first (NVRTC compile for sm_75), then the host run: a broken source fails where it would."""

    def __init__(self, bodies: dict[str, str] | None = None, workdir: str | Path | None = None) -> None:
        super().__init__(bodies, workdir)
        self._compiled: set[str] = set()

    def __call__(self, name: str, expr: str, total: int, device: torch.device, args: tuple[Any, ...]) -> None:
        src = self.source(name)
        if src.source not in self._compiled:  # one NVRTC compile per module, like CuPy's RawModule
            compile_cubin(src.source, src.name_expressions, "sm_75", name=f"{name}.cu")
            self._compiled.add(src.source)
        super().__call__(name, expr, total, device, args)
