"""Which fp32 convolution kernel each shape uses on CPU: a fixed rule per ISA class, shipped in the package.

Why a rule and not a measurement: the kernels round differently (oneDNN direct ~6e-7 relative per layer, NNPACK
Winograd ~4e-6, one GEMM in between) and KEEP's recurrence turns that into other codebook indices. The choice
used to be timed on the first frames that met a shape (issue 24): two machines of one kind, or one machine on a
quiet and a busy night, measured different winners (gaps of 0.2 %) and rendered different frames. Now the kernel
is a pure function of the ISA class, the rule version and the convolution's shape; nothing is timed at run time.
`vs-keep bench` measures every kernel per shape and warns when this machine would prefer another rule.

Why per class: NNPACK's Winograd beats oneDNN ~2x on AVX2-class cores (AMD EPYC, AVX2 only: the Winograd rule
2.10x plain eager), but on an AVX-512 Xeon oneDNN's kernels are wide enough that the rewrites lost to plain eager
(issue 18: 4.52 vs 4.18 s a frame). The numbers behind each class's rule are in `EVIDENCE`.

`VS_KEEP_CPU_KERNELS=reference|winograd|gemm` replaces the class's rule (e.g. to reproduce another machine's
output: `reference` = oneDNN everywhere, the same on every CPU kind).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

__all__ = [
    "ENV_KERNELS", "EVIDENCE", "ISA_CLASSES", "RULES", "RULE_VERSION", "KernelRule", "active_rule", "conv_kernel",
    "cpu_kind", "isa_class",
]

ENV_KERNELS = "VS_KEEP_CPU_KERNELS"
#: bump when a rule in `RULES` changes (it changes fp32 output on that class; part of the numerics identity)
RULE_VERSION = 2
#: /proc/cpuinfo flags that decide which kernels are fast (vector width, 16-bit dot products, matrix units)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                "amx_int8", "asimd", "sve")
ISA_CLASSES = ("amx", "avx512-bf16", "avx512", "avx2", "arm", "other")


@dataclass(frozen=True)
class KernelRule:
    """Kernel per convolution category. 3x3 stride-1 convolutions on inputs of at least `winograd_min_side`² run
    NNPACK's Winograd (None: never); smaller 3x3 (< 32²) and 1x1 run as one GEMM when `gemm`; all else oneDNN."""

    name: str
    winograd_min_side: int | None
    gemm: bool


#: the named rules (also the values of VS_KEEP_CPU_KERNELS)
NAMED = {
    "reference": KernelRule("reference", None, False),  # oneDNN (the reference op) everywhere
    "winograd": KernelRule("winograd", 32, True),  # Winograd >= 32², one GEMM below and for 1x1
    "gemm": KernelRule("gemm", None, True),  # oneDNN for 3x3 >= 32², one GEMM below and for 1x1
}
#: ISA class -> rule. Classes nobody measured get the reference rule: never slower than plain eager.
RULES: dict[str, KernelRule] = {
    "avx2": NAMED["winograd"],
    "avx512": NAMED["reference"],
    "avx512-bf16": NAMED["gemm"],
    "amx": NAMED["reference"],
    "arm": NAMED["reference"],
    "other": NAMED["reference"],
}
#: the measurements behind `RULES` (full-size KEEP, 2 torch threads, per 512² frame, same run per line)
EVIDENCE: dict[str, str] = {
    "avx2": "AMD EPYC, AVX2 only (issue 24): plain eager 10.06 s, Winograd rule 4.79 s (2.10x), quiet machine",
    "avx512": "Intel Xeon, AVX-512 (issue 18): plain eager 6.23 s, oneDNN + allocator 4.18 s, Winograd rule 4.52 s",
    "avx512-bf16": "AMD EPYC avx512f+avx512_bf16 (issue 24), 2 shared cores, two runs: vs-keep bench (rows in turn, "
                   "load 0.5 -> 8) plain eager 5.79 s, Winograd rule 5.22 s, GEMM rule 3.56 s (1.63x); "
                   "scripts/rule_bench.py (round-robin, load ~14) plain eager 58.7 s, oneDNN rule 65.0 s, Winograd "
                   "rule 51.4 s, GEMM rule 43.6 s (1.35x)",
    "amx": "Intel Xeon with AMX (issue 18): same kernels as the AVX-512 row: oneDNN fastest",
    "arm": "not measured: the reference rule (never slower than plain eager)",
    "other": "no AVX2/NEON: NNPACK is unavailable, oneDNN everywhere",
}

_KIND: dict[str, Any] = {}
_FIXED_3X3_GEMM_MAX_SIDE = 32  # below this a 3x3's unfold buffer (9x the input) is small


def cpu_kind() -> dict[str, Any]:
    """The CPU as far as kernel speed goes: model name, the flags of `KERNEL_FLAGS` it has, torch's vector ISA,
    the machine architecture."""
    if not _KIND:
        name, flags = platform.processor() or platform.machine(), set()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name in (platform.processor(), platform.machine()):
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
        except OSError:
            pass
        _KIND.update(model=name, flags=[f for f in KERNEL_FLAGS if f in flags],
                     capability=torch.backends.cpu.get_cpu_capability(), machine=platform.machine().lower())
    return dict(_KIND)


def isa_class(kind: dict[str, Any] | None = None) -> str:
    """The ISA class of a CPU description (`cpu_kind()`, default this CPU): what the kernel rule is keyed on."""
    kind = cpu_kind() if kind is None else kind
    flags = set(kind.get("flags", ()))
    if flags & {"amx_tile", "amx_bf16"}:
        return "amx"
    if "avx512f" in flags:
        return "avx512-bf16" if "avx512_bf16" in flags else "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    if "asimd" in flags or kind.get("machine", "") in ("aarch64", "arm64"):
        return "arm"
    return "other"


def active_rule(kind: dict[str, Any] | None = None) -> KernelRule:
    """The rule in force: `VS_KEEP_CPU_KERNELS` when set, else the rule of this CPU's ISA class."""
    mode = os.environ.get(ENV_KERNELS, "").strip().lower()
    if mode in ("", "auto"):
        return RULES[isa_class(kind)]
    if mode in NAMED:
        return NAMED[mode]
    raise InputError(f"{ENV_KERNELS} must be auto, {', '.join(NAMED)}, got {mode!r}")


def conv_kernel(rule: KernelRule, kernel_size: int, padding: int, side: int, plain: bool, nnpack: bool) -> str:
    """The kernel ("default" = oneDNN, "winograd", "im2col", "gemm1x1") for a stride-1 ungrouped convolution
    (`plain`) with a square `kernel_size` and `padding` on inputs whose smaller side is `side`. A pure function:
    the same arguments give the same kernel on every run. `nnpack`: whether NNPACK runs here."""
    if not plain:
        return "default"
    if kernel_size == 1 and padding == 0:
        return "gemm1x1" if rule.gemm else "default"
    if kernel_size == 3 and padding == 1:
        if rule.winograd_min_side is not None and side >= rule.winograd_min_side and nnpack:
            return "winograd"
        if side < _FIXED_3X3_GEMM_MAX_SIDE and rule.gemm:
            return "im2col"
    return "default"
