"""Measure `vs-keep restore --shards`: 1 vs 2 shards (in-process and on a local Ray), per-shard overhead (model load,
context decode + detection), and the cost of encoding a lossy codec per segment. Prints JSON on stdout.

    PYTHONPATH=. python scripts/shard_bench.py [--frames 32] [--weights FILE]   (synthetic small KEEP by default)

Every process runs torch with one thread: Ray's CPU tasks do (OMP_NUM_THREADS = the task's num_cpus), and the CPU
path's float32 results depend on the thread count, so the single-process reference must match it. Ray is restarted
for each shard count, so no worker reuses the engine caches of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, here and in the Ray workers started from here
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def lossy_seams(frames: list[np.ndarray], work: Path, segments: int, crf: int, preset: str) -> dict:
    """The same frames encoded with libx264 as one stream vs as `segments` stream-copied segments."""
    from vs_keep.shards import concat_segments
    from vs_keep.video import FrameSink

    fps = Fraction(25)
    one = work / "one.mp4"
    with FrameSink(one, fps=fps, crf=crf, preset=preset) as sink:
        for f in frames:
            sink.write(f)
    edges = [round(i * len(frames) / segments) for i in range(segments + 1)]
    parts = []
    for i, (a, b) in enumerate(zip(edges, edges[1:])):
        p = work / f"seg{i}.mp4"
        with FrameSink(p, fps=fps, crf=crf, preset=preset, first=a) as sink:
            for f in frames[a:b]:
                sink.write(f)
        parts.append(str(p))
    cat = work / "cat.mp4"
    concat_segments(parts, cat, fps)
    q1 = [psnr(x, y) for x, y in zip(decoded(one), frames)]
    q2 = [psnr(x, y) for x, y in zip(decoded(cat), frames)]
    seams = [e for e in edges[1:-1]]
    near = sorted({m for e in seams for m in range(e - 2, e + 2)})
    return {
        "segments": segments, "crf": crf, "preset": preset, "frames": len(frames),
        "bytes_one_stream": one.stat().st_size, "bytes_segments": cat.stat().st_size,
        "psnr_one_stream": round(float(np.mean(q1)), 3), "psnr_segments": round(float(np.mean(q2)), 3),
        "psnr_one_stream_near_seams": round(float(np.mean([q1[m] for m in near])), 3),
        "psnr_segments_near_seams": round(float(np.mean([q2[m] for m in near])), 3),
        "frames_equal_to_one_stream": sum(np.array_equal(x, y) for x, y in zip(decoded(one), decoded(cat))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--weights")
    ap.add_argument("--in-process", action="store_true", help="also time --shards 2 without Ray")
    args = ap.parse_args()

    import torch

    from data.face_scenes import two_face_scene
    from media import write_video
    from vs_keep.cli import main as cli
    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.face import detect_faces
    from vs_keep.models.synthetic import write_synthetic_checkpoint
    from vs_keep.resume import restore_resumable
    from vs_keep.shards import Encoding

    work = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    weights = args.weights or str(write_synthetic_checkpoint(work / "keep_small.pth", "keep", "small"))
    frames = two_face_scene(n=args.frames).frames
    src = write_video(work / "in.mp4", frames, fps=25, audio=True, options={"g": "12", "bf": "2"})
    common = ["--weights", weights, "--chunk", str(args.chunk), "--faces", "largest", "--codec", "ffv1", "--no-progress"]
    torch.set_num_threads(1)
    report: dict = {"cpu": platform.processor() or platform.machine(), "frames": args.frames, "chunk": args.chunk,
                    "load_average_1min_at_start": os.getloadavg()[0], "torch_threads_single_process": torch.get_num_threads()}

    t = time.perf_counter()
    assert cli(["restore", str(src), str(work / "one.mkv"), *common]) == 0
    report["single_process_s"] = round(time.perf_counter() - t, 2)

    if args.in_process:
        t = time.perf_counter()
        assert cli(["restore", str(src), str(work / "seq2.mkv"), *common, "--shards", "2"]) == 0
        report["two_shards_in_process_s"] = round(time.perf_counter() - t, 2)

    import ray

    options = EngineOptions(weights=weights, device="cpu", chunk=args.chunk, faces="largest", scene_reset=False)
    enc = Encoding(fps=Fraction(25), codec="ffv1")
    for shards in (1, 2):
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False)
        report[f"ray_init_s_{shards}"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        results = restore_resumable(src, work / f"ray{shards}.mkv", options, shards=shards, encoding=enc, ray=True,
                                    progress=False)
        report[f"ray_{shards}_shards_s"] = round(time.perf_counter() - t, 2)
        report[f"ray_{shards}_shards"] = [
            {"frames": r.frames, "seconds": round(r.seconds, 2), "model_load_s": round(r.load_seconds, 2),
             "context_frames": r.context_frames, "context_decode_s": round(r.context_decode_seconds, 3), "pid": r.pid}
            for r in results
        ]
        ray.shutdown()
    want = decoded(work / "one.mkv")
    report["outputs_equal_single_process"] = {
        name: all(np.array_equal(a, b) for a, b in zip(decoded(work / name), want)) and len(decoded(work / name)) == len(want)
        for name in ("seq2.mkv", "ray1.mkv", "ray2.mkv") if (work / name).exists()
    }

    # per-frame costs behind the per-shard overhead
    t = time.perf_counter()
    engine = build_engine(options)
    report["model_load_in_process_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    for f in frames[:16]:
        detect_faces(engine.detector, f, faces="largest", min_face_size=20.0)
    report["detection_ms_per_frame"] = round((time.perf_counter() - t) / 16 * 1000, 1)
    report["lossy_seams"] = [lossy_seams(frames, work, k, 18, "medium") for k in (2, 4)]
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
