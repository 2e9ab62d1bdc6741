"""Shared helpers of the bench sections: progress on stderr, load average, timing a chunk, rounding, and running
one section so that its failure is recorded instead of losing the others. Nothing here prints to stdout."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "SCHEMA", "bench_fn", "chunk_frames", "load_avg", "progress", "round_sig", "safe", "timed", "to_cpu",
]

SCHEMA = "vs-keep-bench/1"

log = logging.getLogger("vs_keep.bench")


def progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def load_avg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def round_sig(x: float | None, n: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{n}g}")


def safe(section: str, fn: Callable[[], Any]) -> Any:
    """Run one bench section; an exception becomes {"error": ...} so one broken part does not lose the others."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the run continues
        log.debug("bench section %s failed", section, exc_info=True)
        progress(f"{section}: {exc.__class__.__name__}: {exc}")
        return {"error": f"{exc.__class__.__name__}: {exc}"}


def chunk_frames(model: Any, golden: dict | None, t: int) -> Any:
    """The fixture's frames (full model), else a smooth moving pattern of t frames in [-1, 1]."""
    import torch

    if golden is not None and int(model.face_size) == int(golden["input"].shape[-1]):
        return golden["input"][0][:t]
    s = int(model.face_size)
    g = torch.Generator().manual_seed(1234)
    base = torch.rand(1, 3, s // 8 + 4, s // 8 + 4, generator=g) * 2 - 1
    big = torch.nn.functional.interpolate(base, size=(s + 32, s + 32), mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.cat([big[..., 2 * k : 2 * k + s, 3 * k : 3 * k + s] for k in range(t)])


def timed(runner: Any, frames: Any, repeats: int) -> dict[str, Any]:
    """Run the chunk `repeats` times; keep the fastest total, the fastest time of each stage and the first outputs."""
    import torch

    from ..models.keep import STAGES

    best_total, best_stage = float("inf"), {k: float("inf") for k in STAGES}
    out = traces = chunk = None
    for r in range(max(1, repeats)):
        runner.times.clear()
        trace_list: list[dict] = []
        start = time.perf_counter()
        result = runner(frames, trace_list)
        total = time.perf_counter() - start
        best_total = min(best_total, total)
        for k in STAGES:
            best_stage[k] = min(best_stage[k], runner.times.get(k, 0.0))
        if r == 0:
            out, traces, chunk = result, trace_list, runner.last_chunk
    t = frames.shape[0]
    idx = torch.cat([tr["idx"] for tr in traces])
    return {  # accuracy is computed on CPU against the fixture: bring the (GPU) results over once, after timing
        "per_frame_s": best_total / t,
        "stages_s_per_frame": {k: round_sig(v / t) for k, v in best_stage.items()},
        "out": to_cpu(out),
        "idx": to_cpu(idx),
        "traces": to_cpu(traces),
        "chunk": to_cpu(chunk),
    }


def to_cpu(value: Any) -> Any:
    """Tensors (also inside lists, dicts and dataclasses such as `Chunk`) moved to the CPU."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_cpu(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init})
    return value


def bench_fn(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


