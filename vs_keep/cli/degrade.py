"""`vs-keep degrade IN OUT --level mild|medium|heavy`: KEEP/VFHQ-style degraded copy of a clip, reproducible."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.degrade import DOWNSAMPLE_MODES, LEVELS

    parser.add_argument("input", help="source video or image folder (the high-quality reference)")
    parser.add_argument("output", help="degraded output: a folder (PNG frames) or a .mkv (FFV1) / .mp4 (lossless x264)")
    parser.add_argument("--level", required=True, choices=list(LEVELS), help="degradation level (KEEP Table A1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--downsample", default="random", choices=["random", *DOWNSAMPLE_MODES],
                        help="x4 downsampling filter; random draws one per clip from the seed (default)")
    parser.add_argument("--preset", default="medium", help="x264 preset of the codec step (default medium)")
    parser.add_argument("--no-upscale", action="store_true",
                        help="write the low-resolution frames (skip the final x4 up)")
    parser.add_argument("--save-lr", metavar="FILE.h264", help="also keep the compressed low-resolution H.264 stream")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.degrade import degrade_file, params_json_path

    start = time.perf_counter()
    record = degrade_file(
        args.input, args.output, level=args.level, seed=args.seed, downsample=args.downsample, preset=args.preset,
        upscale=not args.no_upscale, save_lr=args.save_lr, progress=not args.no_progress, max_frames=args.frames,
    )
    took = time.perf_counter() - start
    print(
        f"vs-keep degrade: {record['frames']} frames, level {record['level']}: blur sigma {record['sigma']:.2f}, "
        f"noise {record['delta']:.2f}, CRF {record['crf']}, {record['downsample']} down; {took:.1f} s; "
        f"parameters in {params_json_path(args.output)}",
        file=sys.stderr,
    )
    return 0
