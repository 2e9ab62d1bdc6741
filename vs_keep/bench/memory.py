"""Memory section of `vs-keep bench`: peak RSS of a short and a long stream, each in a fresh process.

`vs-keep bench --frames N` is the child: it streams N small frames through the aligned-mode engine with the tiny
synthetic KEEP and prints its own peak RSS, so the parent compares lengths without its own memory in the way.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import progress, round_sig

__all__ = ["memory_section", "peak_rss_mb", "streaming_memory_run"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own address space so far, in MiB.

    Linux: VmHWM from /proc/self/status. Not getrusage's ru_maxrss: that survives execve, so a child started by a
    big parent reports at least the parent's RSS at fork time. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if os.uname().sysname == "Darwin" else peak / 1024


def streaming_memory_run(frames: int, *, size: int = 48, chunk: int = 20, fast: bool = True) -> dict[str, Any]:
    """Restore `frames` synthetic size² frames through the streaming aligned-mode engine with the tiny KEEP and
    report time and peak RSS (run each length in a fresh process to compare peaks)."""
    from ..aligned import restore_aligned
    from ..runtime.cpu import optimize_cpu
    from ..models.synthetic import build_synthetic_keep

    model = build_synthetic_keep("tiny")
    if fast:
        optimize_cpu(model)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size + 64, size + 64, 3), dtype=np.uint8)

    def source():  # frames made on the fly: the input side holds nothing either
        for i in range(frames):
            x, y = (3 * i) % 64, (2 * i) % 64
            yield base[y : y + size, x : x + size]

    start = time.perf_counter()
    checksum, count = 0, 0
    rss_after_first_chunk = None
    for out in restore_aligned(model, source(), chunk=chunk):
        checksum += int(out[0, 0, 0])
        count += 1
        if count == chunk:
            rss_after_first_chunk = peak_rss_mb()
    return {
        "frames": count,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_after_first_chunk": round(rss_after_first_chunk or 0.0, 1),
        "checksum": checksum,
    }


def memory_section(lengths: tuple[int, int], threads: int) -> dict[str, Any]:
    """Peak RSS of fresh processes streaming `lengths` frames (tiny synthetic KEEP, 48x48 frames, chunks of 20)."""
    out: dict[str, Any] = {"method": "fresh process per length; streaming aligned-mode engine, tiny synthetic KEEP"}
    peaks = []
    for n in lengths:
        progress(f"memory: streaming {n} frames in a fresh process")
        cmd = [sys.executable, "-m", "vs_keep", "bench", "--frames", str(n), "--threads", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        res = json.loads(proc.stdout)
        out[f"frames_{n}"] = res
        peaks.append(res["peak_rss_mb"])
    out["peak_rss_ratio_long_vs_short"] = round_sig(peaks[1] / peaks[0], 4)
    out["flat"] = bool(peaks[1] <= 1.1 * peaks[0])
    return out


