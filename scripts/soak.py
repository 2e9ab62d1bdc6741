"""Soak test of the VapourSynth filter: random seeks and vsjetengine load/dispose cycles, as JSON.

Why: previewers reload a script hundreds of times a day and film jobs run overnight; memory, threads and file
descriptors must stay flat. Two phases, one process:

- seeks: `keep(source(video))` in one vsjetengine environment, `--seeks` random `get_frame` requests; RSS, threads
  and open files after the first tenth (warm) against the end.
- reload: `--cycles` times: load a script calling `keep()` into a fresh environment, render one frame, dispose it.
  Peak RSS of each cycle (Linux: VmHWM, reset per cycle through /proc/self/clear_refs; CUDA: peak allocated),
  threads and open files after each dispose.

Pass criteria (`ok`): peak RSS of the last cycle <= 1.1x the second; no thread or file-descriptor growth from the
second cycle to the last, nor from the warm point to the end of the seeks; seek RSS within 1.1x of the warm point.

    python scripts/soak.py --json soak.json                       # full: 2,000 seeks over 4 chunks (3 cached), 20 cycles
    python scripts/soak.py --seeks 200 --cycles 3                 # a quick look

Without --weights/--video it writes a small synthetic KEEP checkpoint and a tiny two-face clip (tests/ helpers).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
from vs_keep import keep
from vs_keep.plugin import source
keep(source({video!r}), weights={weights!r}, chunk={chunk}, device={device!r}).set_output(0)
"""


def rss_kib() -> int:
    return _status_kib("VmRSS")


def peak_kib() -> int:
    """Peak RSS since the last `reset_peak()` (Linux VmHWM), else the process's lifetime peak."""
    try:
        return _status_kib("VmHWM")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ValueError(key)


def threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def open_fds() -> int | None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return None


def cuda_peak(device: str) -> int | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    value = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    return int(value)


def make_media(folder: Path, frames: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from data.face_scenes import two_face_scene
    from media import write_video

    from vs_keep.models.synthetic import write_synthetic_checkpoint

    weights = write_synthetic_checkpoint(folder / "keep_small.pth", "keep", "small")
    video = write_video(folder / "tiny.mkv", two_face_scene(n=frames, size=(120, 160)).frames, fps=25, audio=False)
    return weights, video


def seek_phase(policy, video: Path, weights: Path, *, seeks: int, chunk: int, device: str, seed: int) -> dict:
    from vsengine.vpy import load_code

    script = load_code(SCRIPT.format(video=str(video), weights=str(weights), chunk=chunk, device=device), policy)
    script.result()
    env = script.environment
    clip = env.outputs[0].clip
    num_frames = clip.num_frames
    rng = random.Random(seed)
    order = [rng.randrange(clip.num_frames) for _ in range(seeks)]
    warm_at = max(1, seeks // 10)
    warm: dict = {}
    start = time.perf_counter()
    with env.use():
        for i, n in enumerate(order):
            clip.get_frame(n).close()
            if i + 1 == warm_at:
                gc.collect()
                warm = {"rss_kib": rss_kib(), "threads": threads(), "fds": open_fds()}
                reset_peak()
    gc.collect()
    end = {"rss_kib": rss_kib(), "peak_rss_kib": peak_kib(), "threads": threads(), "fds": open_fds()}
    seconds = time.perf_counter() - start
    del clip
    script.dispose()
    gc.collect()
    return {
        "seeks": seeks, "num_frames": num_frames, "chunk": chunk, "seconds": round(seconds, 2),
        "warm_after": warm_at, "warm": warm, "end": end,
        "rss_ratio": round(end["peak_rss_kib"] / warm["rss_kib"], 4),
        "ok": end["peak_rss_kib"] <= 1.1 * warm["rss_kib"] and end["threads"] <= warm["threads"]
        and (end["fds"] or 0) <= (warm["fds"] or 0),
    }


def reload_phase(policy, video: Path, weights: Path, *, cycles: int, chunk: int, device: str) -> dict:
    from vsengine.vpy import load_code

    code = SCRIPT.format(video=str(video), weights=str(weights), chunk=chunk, device=device)
    rows = []
    start = time.perf_counter()
    for i in range(cycles):
        reset_peak()
        t = time.perf_counter()
        script = load_code(code, policy)
        script.result()
        env = script.environment
        clip = env.outputs[0].clip
        with env.use():
            clip.get_frame(i % clip.num_frames).close()
        del clip, env
        script.dispose()
        del script
        gc.collect()
        rows.append({
            "cycle": i + 1, "seconds": round(time.perf_counter() - t, 2), "peak_rss_kib": peak_kib(),
            "rss_kib": rss_kib(), "threads": threads(), "fds": open_fds(), "cuda_peak_bytes": cuda_peak(device),
        })
    second, last = rows[min(1, len(rows) - 1)], rows[-1]
    ratio = last["peak_rss_kib"] / second["peak_rss_kib"]
    cuda_ok = True
    if last["cuda_peak_bytes"] is not None and second["cuda_peak_bytes"]:
        cuda_ok = last["cuda_peak_bytes"] <= 1.1 * second["cuda_peak_bytes"]
    return {
        "cycles": cycles, "seconds": round(time.perf_counter() - start, 2), "rows": rows,
        "peak_rss_ratio_last_to_second": round(ratio, 4),
        "thread_growth": last["threads"] - second["threads"],
        "fd_growth": (last["fds"] or 0) - (second["fds"] or 0),
        "ok": ratio <= 1.1 and last["threads"] <= second["threads"] and (last["fds"] or 0) <= (second["fds"] or 0)
        and cuda_ok,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeks", type=int, default=2000)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--frames", type=int, default=16, help="clip length (default 16 = 4 chunks of 4, 3 cached: evictions)")
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path)
    p.add_argument("--video", type=Path)
    p.add_argument("--json", type=Path, help="write the result here (default: stdout)")
    args = p.parse_args(argv)

    import torch
    from vsengine.policy import GlobalStore, Policy

    from vs_keep.runtime.cpu_choice import cpu_kind

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vs-keep-soak-") as tmp:
        weights, video = args.weights, args.video
        if weights is None or video is None:
            weights, video = make_media(Path(tmp), args.frames)
        policy = Policy(GlobalStore())
        policy.register()
        try:
            result = {
                "cpu": cpu_kind()["model"], "device": args.device, "torch_threads": args.threads,
                "peak_reset": reset_peak(),
                "seeks": seek_phase(policy, video, weights, seeks=args.seeks, chunk=args.chunk, device=args.device,
                                    seed=args.seed) if args.seeks else None,
                "reload": reload_phase(policy, video, weights, cycles=args.cycles, chunk=args.chunk,
                                       device=args.device) if args.cycles else None,
            }
        finally:
            policy.unregister()
    result["ok"] = all(r["ok"] for r in (result["seeks"], result["reload"]) if r is not None)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
