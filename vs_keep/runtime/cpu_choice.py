"""Per-CPU choice of the fp32 convolution kernel: measured once per CPU kind, torch version, thread count and
convolution shape, then read from a small JSON file under the cache root.

Why: which fp32 kernel is fastest depends on the CPU. On an AVX2-class core NNPACK's Winograd transform beats
oneDNN's direct convolution ~2x at 64²-512², but on a Xeon with AVX-512 oneDNN's kernels are wide enough that the
same rewrites lost to plain eager (issue 18: 4.52 vs 4.18 s a frame). A fixed rule cannot be right on both, so
`FastConv2d` (runtime.cpu) asks `pick` for every shape: the first time a shape is seen the candidate kernels
(oneDNN = the reference op, Winograd, one GEMM) each run on the real input (one warm-up and two timed calls), the
fastest wins, ties within `TIE_MARGIN` go to the reference kernel, and the result of the chosen kernel is used for
that call. The table is saved atomically to `<cache root>/cpu/kernels-<identity hash>.json` and, once a shape is in
it, never measured or changed again: for a given cache file the choice is deterministic. All candidates are fp32
kernels that keep the engine's parity rule (tests/test_keep.py); the bench prints what they do to the output.

Set `VS_KEEP_CPU_KERNELS=reference|winograd` to bypass the table (reference: oneDNN everywhere; winograd: the fixed
rule of `CpuOptions(auto=False)`), e.g. to reproduce a run from another machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["ENV_KERNELS", "TIE_MARGIN", "KernelTable", "cpu_identity", "cpu_kind", "pick", "table"]

log = logging.getLogger(__name__)

ENV_KERNELS = "VS_KEEP_CPU_KERNELS"
#: a rewrite must be this much faster than the reference kernel to be chosen (timing noise should not flip it)
TIE_MARGIN = 0.05
#: /proc/cpuinfo flags that decide which kernels are fast (vector width, 16-bit dot products, matrix units)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                "amx_int8", "asimd", "sve")

_LOCK = threading.Lock()
_TABLES: dict[str, KernelTable] = {}
_KIND: dict[str, Any] = {}


def cpu_kind() -> dict[str, Any]:
    """The CPU as far as kernel speed goes: model name, the flags of `KERNEL_FLAGS` it has, torch's vector ISA."""
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
                     capability=torch.backends.cpu.get_cpu_capability())
    return dict(_KIND)


def cpu_identity() -> dict[str, Any]:
    """Everything a kernel choice depends on: the CPU kind, torch version and intra-op thread count."""
    return {**cpu_kind(), "torch": torch.__version__, "threads": torch.get_num_threads()}


class KernelTable:
    """shape key -> chosen kernel (plus the measured milliseconds), backed by one JSON file (or none)."""

    def __init__(self, identity: dict[str, Any], path: Path | None) -> None:
        self.identity = identity
        self.path = path
        self.choices: dict[str, dict[str, Any]] = {}
        self.measured = 0  # shapes measured by this process (0 once the cache holds every shape)
        self.reload()

    def reload(self) -> None:
        """Add the file's entries (they win: another process may have measured a shape since this one loaded)."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("identity") == self.identity:
                self.choices.update(data.get("choices", {}))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable CPU kernel table %s (%s); measuring again", self.path, exc)

    def save(self) -> None:
        """Merge into the file (entries already there win: a cached choice never changes) and replace it atomically."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = dict(self.choices)
            if self.path.exists():
                try:
                    data = json.loads(self.path.read_text())
                    if data.get("identity") == self.identity:
                        merged.update(data.get("choices", {}))
                except (OSError, ValueError):
                    pass
            self.choices = merged
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".json.tmp")
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o644)  # like any other cache file (mkstemp makes it 0600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"identity": self.identity, "choices": merged}, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:  # read-only cache: the choice still holds for this process
            log.debug("could not save the CPU kernel table to %s (%s)", self.path, exc)


def table() -> KernelTable:
    """The kernel table for this CPU, torch version, the current thread count and cache root (loaded once per
    process and root: a process that changes VS_KEEP_HOME reads and writes the table of the new root)."""
    identity = cpu_identity()
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    try:
        from ..cache import folder

        path: Path | None = folder("cpu") / f"kernels-{key}.json"
    except Exception:  # noqa: BLE001 - no usable cache location: measure per process
        path = None
    slot = f"{key}:{path}"
    if slot not in _TABLES:
        _TABLES[slot] = KernelTable(identity, path)
    return _TABLES[slot]


@contextlib.contextmanager
def _machine_lock(tab: KernelTable) -> Iterator[None]:
    """Serialise measuring across the processes that share the table file (shards, vspipe jobs, Ray workers on
    one machine): the first measures a shape, the others read its choice, so they all run the same kernels."""
    from ..atomic import file_lock

    with contextlib.ExitStack() as stack:
        if tab.path is not None:
            try:
                stack.enter_context(file_lock(tab.path.with_suffix(".lock")))
            except OSError:  # read-only cache: choices agree within this process only
                pass
        yield


def _forced(candidates: Sequence[str], fixed: str) -> str | None:
    mode = os.environ.get(ENV_KERNELS, "").strip().lower()
    if mode in ("", "auto"):
        return None
    if mode == "reference":
        return "default"
    if mode == "winograd":
        return fixed
    raise InputError(f"{ENV_KERNELS} must be auto, reference or winograd, got {mode!r}")


def pick(shape: str, candidates: Sequence[str], run: Callable[[str], Tensor], fixed: str) -> tuple[str, Tensor | None]:
    """The kernel for `shape` among `candidates` ("default" = the reference op first). Returns the kind and, when
    it was measured just now, the output of the chosen kernel for this call (else None: the caller runs it).
    `fixed` is what the fixed rule would use (for `VS_KEEP_CPU_KERNELS=winograd`)."""
    forced = _forced(candidates, fixed)
    if forced is not None:
        return forced, None
    if len(candidates) == 1:
        return candidates[0], None
    tab = table()
    entry = tab.choices.get(shape)
    if entry is not None and entry.get("kind") in candidates:
        return entry["kind"], None
    with _LOCK, _machine_lock(tab):
        tab.reload()
        entry = tab.choices.get(shape)
        if entry is not None and entry.get("kind") in candidates:
            return entry["kind"], None
        outs: dict[str, Tensor] = {}
        best = {k: float("inf") for k in candidates}
        for kind in candidates:  # warm-up: primitive creation, weight reorders, NNPACK init
            outs[kind] = run(kind)
        for _ in range(2):
            for kind in candidates:
                start = time.perf_counter()
                run(kind)
                best[kind] = min(best[kind], time.perf_counter() - start)
        fastest = min(best, key=best.__getitem__)
        chosen = "default" if best["default"] <= best[fastest] * (1 + TIE_MARGIN) else fastest
        tab.choices[shape] = {"kind": chosen, "ms": {k: round(v * 1000, 3) for k, v in best.items()}}
        tab.measured += 1
        tab.save()
        log.debug("CPU kernel for %s: %s (%s)", shape, chosen, tab.choices[shape]["ms"])
        return chosen, outs[chosen]
