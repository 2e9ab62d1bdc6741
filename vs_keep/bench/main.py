"""`vs-keep bench` (= scripts/bench.py): per-stage times, fps, accuracy and memory of KEEP here, as JSON on stdout.

In one run: the reference path (fp32 eager, the default code path = official op order) and every faster setting,
each with its speed-up over the reference and its accuracy (codebook-index agreement and output error against
the golden fixture, when the full model is benchmarked and the fixture is found, and against the reference run);
fp16 accuracy (emulated where the CPU has no native fp16 GEMMs); the opt-in OpenVINO bf16 decoder; face-stage
timings at 720p/1080p with 1 and 3 faces; peak RSS for a short and a long stream (fresh processes). Progress goes to
stderr. Timings on a shared machine are noisy: the load average is recorded next to them.

One module per section: `cpu` (CPU settings), `parity` (accuracy against the fixture), `face` (face stages),
`kernels`, `memory`, `cuda`; this module parses the options and assembles the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import SCHEMA, chunk_frames, load_avg, progress, safe
from .cpu import cpu_runs
from .cuda import cuda_section
from .kernels import kernels_section
from .memory import memory_section

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, one repeat, short memory runs, no faces")
    parser.add_argument("--model", choices=("full", "small", "tiny"), help="synthetic KEEP size (default: full; --quick: tiny)")
    parser.add_argument("--devices", default="auto", help="comma list of cpu,cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--precisions", default="fp32,bf16,fp16",
                        help="comma list of fp32,bf16,fp16 (bf16: the OpenVINO decoder of cpu_precision='bf16'; fp16: the "
                             "torch policy of fp16=True, accuracy emulated on CPUs without fp16 GEMMs)")
    parser.add_argument("--repeats", type=int, help="timed runs per setting, the fastest is kept (default 2; --quick 1)")
    parser.add_argument("--chunk", type=int, help="frames per timed chunk (default: the fixture's 3 for full, 4 otherwise)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 2; --quick 1)")
    parser.add_argument("--fixture", help="golden_keep_synth.pt (default: $VS_KEEP_SHARED/fixtures or ../shared/fixtures)")
    parser.add_argument("--frames", type=int, help="memory-only mode: stream N small frames with the tiny model, print peak RSS")
    parser.add_argument("--memory-frames", default=None, help="short,long stream lengths for the RSS comparison (default 100,2000)")
    parser.add_argument("--no-faces", action="store_true", help="skip the 720p/1080p face-stage timings")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS comparison")
    parser.add_argument("--no-sweep", action="store_true", help="skip the all-but-flow and one-stage-at-a-time 16-bit accuracy runs")
    parser.add_argument("--out", help="also write the JSON to this file")


def environment(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    import torch

    from ..numerics import numerics_identity
    from ..runtime.cpu import nnpack_available
    from ..runtime.cpu_choice import cpu_kind
    from ..runtime.precision import native_fp16_cpu

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_kind()["model"],
        "cpu_kind": cpu_kind(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_fp16_cpu": native_fp16_cpu(),
        "nnpack": nnpack_available(),
        "threads": threads,
        "numerics": numerics_identity("cpu", "fp32", threads),  # what decides the shipped CPU path's fp32 bits
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_start": load_avg(),
        "quick": bool(args.quick),
        "note": "wall-clock times, fastest of the repeats; other processes on a shared machine inflate them (see load_avg)",
    }
    for mod in ("tensorrt", "cupy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            env[mod] = None
    return env


def run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or (1 if args.quick else 2)
    torch.set_num_threads(threads)
    if args.frames:  # memory child: nothing but the stream, so its peak RSS is the stream's
        from ..runtime.cpu import tune_malloc
        from .memory import streaming_memory_run

        tune_malloc(True)
        print(json.dumps(streaming_memory_run(int(args.frames))))
        return 0
    from .parity import default_fixture
    from ..models.synthetic import build_synthetic_keep

    quick = bool(args.quick)
    size = args.model or ("tiny" if quick else "full")
    repeats = args.repeats or (1 if quick else 2)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    fixture = Path(args.fixture) if args.fixture else default_fixture()
    golden = torch.load(fixture, weights_only=True) if fixture is not None and size == "full" else None
    chunk = args.chunk or (3 if size == "full" else 4)
    mem_lengths = tuple(int(v) for v in (args.memory_frames or ("20,60" if quick else "100,2000")).split(","))

    report: dict[str, Any] = {"schema": SCHEMA, "env": environment(args, threads)}
    progress(f"building the synthetic {size} KEEP")
    model = build_synthetic_keep(size)
    frames = chunk_frames(model, golden, chunk)
    report["model"] = {
        "size": size, "face_size": int(model.face_size), "parameters": sum(p.numel() for p in model.parameters()),
        "chunk_frames": int(frames.shape[0]), "repeats": repeats,
        "fixture": str(fixture) if golden is not None else None,
    }
    with tempfile.TemporaryDirectory(prefix="vs-keep-bench-") as tmp:
        workdir = Path(tmp)
        if "cpu" in devices:
            runs, lowp, shipped = cpu_runs(model, frames, golden, repeats, precisions, quick, workdir, threads, not args.no_sweep)
            report["runs"] = runs
            report["precision_accuracy"] = lowp
            report["shipped_cpu"] = shipped
            report["kernels_cpu"] = safe("kernels", lambda: kernels_section(repeats))
            best = next((r for r in runs if r["setting"] == shipped.get("setting")), None)
            per_face = best["per_frame_s"] if best else None
        else:
            report["runs"], report["precision_accuracy"], report["shipped_cpu"], per_face = [], [], {}, None
        if args.no_faces or quick:
            report["faces"] = {"skipped": "--quick" if quick else "--no-faces"}
        else:
            from .face import faces_section

            progress("faces: 720p / 1080p stage timings")
            report["faces"] = safe("faces", lambda: faces_section(per_face, int(model.face_size), max(repeats, 3)))
        report["cuda"] = safe("cuda", lambda: cuda_section(size, repeats, precisions, golden, chunk)) if "cuda" in devices else {
            "available": False, "reason": "no CUDA device here" if not torch.cuda.is_available() else "not requested"}
    report["memory"] = {"skipped": "--no-memory"} if args.no_memory else safe("memory", lambda: memory_section(mem_lengths, 1))
    report["env"]["load_avg_end"] = load_avg()
    for r in report.get("runs", []):  # tensors are not JSON
        r.pop("out", None)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for scripts/bench.py: same code as `vs-keep bench`."""
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    return run(parser.parse_args(argv))
