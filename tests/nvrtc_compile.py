"""Compile a kernel source to a cubin with NVRTC directly (no GPU, no driver needed): a test helper.

Why: NVRTC is a pure compiler library; with NVIDIA's `nvidia-cuda-nvrtc` wheel (torch depends on it) and the
`cuda-bindings` package it runs on any Linux machine. CI uses it to prove every kernel compiles for every GPU
generation we support, and the self-check tests use it as the first stage of a broken source's path. (On a GPU,
CuPy's RawModule compiles the same text with the same `NVRTC_OPTIONS`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vs_keep.kernels.sources import NVRTC_OPTIONS

#: Turing, Ampere (A100), Ampere (consumer), Ada, Hopper
ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")


class KernelCompileError(RuntimeError):
    """NVRTC (or the host compiler) rejected a kernel source; the message carries the compiler log."""


class NvrtcUnavailable(RuntimeError):
    """The NVRTC library or its Python bindings cannot be loaded here."""


def load_nvrtc() -> Any:
    """`cuda.bindings.nvrtc`, checked to load the library (raises NvrtcUnavailable saying why)."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise NvrtcUnavailable(f"cuda-bindings is not installed (pip install cuda-bindings): {exc}") from None
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # noqa: BLE001 - a missing libnvrtc.so surfaces as various loader errors
        raise NvrtcUnavailable(f"libnvrtc cannot be loaded ({exc.__class__.__name__}: {exc})") from None
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NvrtcUnavailable(f"nvrtcVersion failed: {err}")
    return nvrtc


def _check(nvrtc: Any, result: Any, what: str) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise KernelCompileError(f"{what} failed: {err}")
    return result[1:] if isinstance(result, tuple) and len(result) > 1 else None


def compile_cubin(
    source: str, name_expressions: Sequence[str], arch: str = "sm_80", *, name: str = "kernel.cu"
) -> tuple[bytes, dict[str, str]]:
    """(cubin, {name expression: lowered symbol}) of `source` for `arch`; KernelCompileError with the log."""
    nvrtc = load_nvrtc()
    res = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    (prog,) = _check(nvrtc, res, "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(prog, expr.encode()), f"nvrtcAddNameExpression({expr})")
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in NVRTC_OPTIONS)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise KernelCompileError(f"NVRTC could not compile {name} for {arch}:\n{_log(nvrtc, prog)}")
        (size,) = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        buf = bytes(size)
        _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
        lowered = {}
        for expr in name_expressions:
            (sym,) = _check(nvrtc, nvrtc.nvrtcGetLoweredName(prog, expr.encode()), f"nvrtcGetLoweredName({expr})")
            lowered[expr] = sym.decode() if isinstance(sym, bytes) else str(sym)
        return buf, lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _log(nvrtc: Any, prog: Any) -> str:
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = bytes(size)
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\x00").decode(errors="replace").strip()
