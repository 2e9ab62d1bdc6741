"""`vs-keep restore IN OUT`: decode with PyAV, restore, encode (libx264 by default), audio and subtitles copied.

IN/OUT may be video files or image folders. `--aligned` treats every frame as an aligned face crop (official
`--has_aligned` mode); otherwise faces are detected, aligned, restored per track and merged back into the decoded
frame in its own pixel format: the output keeps the input's pixel format and depth (`--pix-fmt` overrides), colour
tags and per-frame timestamps, and a lossless `--codec` (ffv1, ...) gives back every sample outside the faces.
KEEP's state resets at scene cuts found by `vs_keep.scene` (the filter's detector). A video OUT is written in
pieces kept across runs (`vs_keep.resume`): the same command run again after a crash continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..weights import RESTORERS
from ..resume import PIECE_FRAMES

__all__ = ["add_arguments", "run"]

log = logging.getLogger("vs_keep.cli.restore")

OUTPUT = "output"  # written atomically: on failure `vs-keep` says that nothing was written to it (see vs_keep.cli)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="video file or folder of images")
    p.add_argument("output", help="video file (.mp4/.mkv/...) or folder for PNG frames")
    p.add_argument("--model", choices=list(RESTORERS), default="keep",
                   help="restorer and its weights (default keep: KEEP v0.1.0; keep-v1 / keep-asian: v1.0.0 files)")
    p.add_argument("--weights", help="local checkpoint file (default: the official file, downloaded on first use)")
    p.add_argument("--aligned", action="store_true", help="frames are already aligned face crops")
    p.add_argument("--chunk", type=int, default=20, help="KEEP chunk length; state resets at each chunk (default 20)")
    p.add_argument("--overlap", type=int, default=0,
                   help="frames before each chunk that prime KEEP's state (outputs discarded; default 0 = official)")
    p.add_argument("--stabilize", type=float, default=0.0,
                   help="low-band temporal stabilizer strength in [0,1] (default 0 = off)")
    p.add_argument("--fidelity", type=float, default=0.5, help="CodeFormer fidelity weight w in [0,1] (default 0.5)")
    p.add_argument("--faces", choices=["all", "largest", "center"], default="all", help="which faces (official: largest)")
    p.add_argument("--min-face", type=float, default=20.0, help="ignore faces smaller than this (box side, px)")
    p.add_argument("--max-face", type=float, help="ignore faces larger than this (box side, px; default no limit)")
    p.add_argument("--select-mask", metavar="FILE",
                   help="restore only faces whose box centre is on a non-zero sample of this mask (an image for all "
                        "frames, or a lossless video with one mask per frame; the input's size)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="restored face mixed with the original inside the paste mask, in [0,1] (default 1)")
    p.add_argument("--gray", choices=["auto", "on", "off"], default="auto",
                   help="restore on the luma only (auto: flat chroma on the first, middle and last frame)")
    p.add_argument("--upscale", type=int, default=1, help="output size factor (default 1)")
    p.add_argument("--background", metavar="FILE",
                   help="with --upscale: a pre-upscaled video of the output size and frame count used as the "
                        "background (e.g. from Real-ESRGAN) instead of a bilinear resize")
    p.add_argument("--detector", default="mtcnn", help="mtcnn (bundled), retinaface_resnet50 or retinaface_mobilenet0.25")
    p.add_argument("--parse", action="store_true", help="ParseNet mask in paste-back (needs `vs-keep download parsenet`)")
    p.add_argument("--max-gap", type=int, default=10, help="bridge detection gaps up to this many frames (default 10)")
    p.add_argument("--exact", action="store_true", help="official arithmetic: LMEDS alignment, plain bilinear, truncation")
    p.add_argument("--tiny-weights", help="restore faces smaller than --min-face with DIC (x8) from this checkpoint")
    p.add_argument("--tiny-min", type=float, default=12.0, help="smallest face (px) given to DIC (default 12)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--fp16", action="store_true", help="CUDA: fp16 where the accuracy guard allows (generator, gains)")
    p.add_argument("--decoder", choices=["auto", "torch", "tensorrt"], default="auto",
                   help="KEEP codebook decoder runtime (auto: PyTorch, the measured one; tensorrt is opt-in, unmeasured)")
    p.add_argument("--reference-ops", action="store_true", help="CPU: plain fp32 eager ops instead of the ~2x faster rewrites")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="CPU with AVX512-BF16/AMX: KEEP's decoder in OpenVINO bf16 (faster, not bit-exact; needs openvino)")
    p.add_argument("--codec", default="libx264", help="video encoder (default libx264)")
    p.add_argument("--crf", type=int, default=18, help="x264/x265 CRF (default 18)")
    p.add_argument("--preset", default="medium", help="x264/x265 preset (default medium)")
    p.add_argument("--pix-fmt", help="output pixel format (default: the input's, e.g. yuv420p10le)")
    p.add_argument("--scene-detect", default="auto", metavar="{auto,off}",
                   help="reset KEEP's state at detected scene cuts (default auto; off: at chunk starts only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--shards", type=int, help="restore in N pieces cut at chunk boundaries (same frames as one run)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the shards as Ray tasks (local Ray, or the cluster at ADDRESS); needs vs-keep[ray]")
    p.add_argument("--piece", type=int, default=PIECE_FRAMES, metavar="FRAMES",
                   help=f"video OUT: finished pieces of this many frames (whole chunks) are kept in .OUT.resume/ "
                        f"beside OUT, and running the same command again resumes there (default {PIECE_FRAMES})")
    p.add_argument("--restart", action="store_true", help="discard the finished pieces of an earlier run and start over")


def run(args: argparse.Namespace) -> int:
    """A video OUT is written by `vs_keep.resume` (its work folder keeps the finished pieces of a killed run); a
    frame folder and `--aligned` crops in one pass to `atomic.atomic_output`."""
    from tqdm import tqdm

    from ..atomic import atomic_output, is_folder_output
    from ..engine import EngineOptions, build_engine, load_model, validate
    from ..options import check_scene_detect
    from ..scene import is_cut
    from ..select_mask import MaskFrames
    from ..stream import restore_frames
    from ..video import FrameSink, FrameSource, iter_frames, read_frames, stream_format
    from .safety import checked_length, decoding, refuse_overwriting_input

    refuse_overwriting_input(args.input, args.output)
    if not is_folder_output(args.output):
        _check_container(args.output)
    if args.aligned and (args.overlap or args.stabilize):
        raise InputError("--overlap and --stabilize work on whole frames (face tracks); drop them with --aligned")
    if args.aligned and (args.strength != 1 or args.max_face or args.select_mask or args.background):
        raise InputError("--strength, --max-face, --select-mask and --background work on whole frames; drop them with --aligned")
    if args.background and args.upscale == 1:
        raise InputError("--background is the background of --upscale 2 (or more); add --upscale or drop --background")
    scene = is_cut if args.scene_detect == "auto" else None
    options = EngineOptions(
        weights=args.weights, model=args.model, device=args.device, faces=args.faces, chunk=args.chunk,
        scene_reset=scene is not None, upscale=args.upscale, min_face=args.min_face, detector=args.detector,
        fidelity=args.fidelity, parse=args.parse, exact=args.exact, tiny_faces="dic" if args.tiny_weights else None,
        tiny_weights=args.tiny_weights, tiny_min=args.tiny_min, fp16=args.fp16, decoder=args.decoder,
        cpu_fast=not args.reference_ops, cpu_precision="bf16" if args.cpu_bf16 else "fp32",
        tune_malloc=not args.reference_ops, max_gap=args.max_gap,  # tune_malloc: this process is ours
        overlap=args.overlap, stabilize=args.stabilize, max_face=args.max_face, strength=args.strength,
        select_mask=args.select_mask,
        gray=args.gray == "on",
    )
    try:
        check_scene_detect(args.scene_detect, props=False)  # the filter's validator: one value set
        validate(options)  # the engine's one validator, before the input is decoded
    except InputError as exc:  # its message starts with the option's name: say it as this command's flag
        name, sep, rest = str(exc).partition(" ")
        raise InputError(f"--{name.replace('_', '-')}{sep}{rest}" if hasattr(args, name) else str(exc)) from None
    source = FrameSource(args.input)
    total = checked_length(source)  # decoded, not demuxed; empty or truncated input: fail before loading anything
    if args.select_mask:
        MaskFrames(args.select_mask).check(source.info.width, source.info.height, total)
    if args.background:
        _check_background(args.background, source, total, args.upscale)
    if args.gray == "auto" and not args.aligned:
        options = dataclasses.replace(options, gray=looks_gray_input(source, total))
    if not (args.aligned or is_folder_output(args.output)) or args.shards is not None or args.ray is not None:
        return _run_resumable(args, options, source)
    like = stream_format(args.input) if source.is_video else None
    with atomic_output(args.output) as out:
        if args.aligned:
            from ..aligned import restore_aligned

            net, autocast = load_model(options)
            frames = restore_aligned(net, decoding(iter_frames(args.input), args.input), chunk=args.chunk,
                                     fidelity=args.fidelity, autocast=autocast)
        else:
            frames = restore_frames(build_engine(options), decoding(read_frames(args.input), args.input), total,
                                    gray=options.gray is True, strength=options.strength, scene=scene,
                                    background=read_frames(args.background) if args.background else None)
        bar = tqdm(total=total, unit="frame", file=sys.stderr, disable=args.no_progress, desc="restore")
        with FrameSink(out, fps=source.info.fps, codec=args.codec, crf=args.crf, preset=args.preset, like=like,
                       audio_from=args.input if source.is_video else None, pix_fmt=args.pix_fmt) as sink:
            for frame in frames:
                sink.write(frame)
                bar.update(1)
    bar.close()
    log.info("wrote %d frames", sink.count)
    return 0


def looks_gray_input(source, total: int) -> bool:
    """gray="auto" for a file: the frames `planes.looks_gray` reads pass the official gray test."""
    from ..pixels import to_rgb
    from ..planes import looks_gray
    from ..video import read_frames

    def frame_rgb(n: int) -> np.ndarray:
        frame = next(read_frames(source.path, start=n, max_frames=1))
        return frame if isinstance(frame, np.ndarray) else to_rgb(frame)

    return looks_gray(frame_rgb, total)


def _check_container(path: str) -> None:
    """A video OUT's suffix names a container this ffmpeg writes (PyAV creates no file until a stream is written)."""
    import av

    try:
        av.open(path, mode="w").close()
    except ValueError:
        raise InputError(f"{path}: this ffmpeg has no container for the suffix {Path(path).suffix!r}; use .mkv, .mp4 "
                         "or .mov (no suffix: a folder of PNG frames)") from None


def _check_background(path: str, source, total: int, upscale: int) -> None:
    """`--background FILE`: a video of the output size with a frame per input frame."""
    from ..video import FrameSource

    if not source.is_video:
        raise InputError("--background goes with a video input; restore the image folder without it")
    bg = FrameSource(path)
    want = (source.info.width * upscale, source.info.height * upscale)
    if (bg.info.width, bg.info.height) != want:
        raise InputError(f"--background {path} is {bg.info.width}x{bg.info.height}; with --upscale {upscale} it must be "
                         f"{want[0]}x{want[1]} (upscale x the input)")
    if (count := bg.count_frames()) < total:
        raise InputError(f"--background {path} has {count} frames, the input {total}: give one per input frame")


def _run_resumable(args: argparse.Namespace, options, source) -> int:
    """A video OUT, and `--shards N [--ray [ADDRESS]]`: `vs_keep.resume` restores it in pieces kept across runs."""
    from ..atomic import is_folder_output
    from ..resume import restore_resumable
    from ..shards import Encoding

    if args.ray is not None and args.shards is None:
        raise InputError("--ray runs shards: add --shards N (e.g. the number of GPUs)")
    if args.aligned:
        raise InputError("--shards does not apply to --aligned crops; drop --shards")
    if args.shards is not None and is_folder_output(args.output):
        raise InputError(f"{args.output}: --shards writes one video file; give OUT a suffix such as .mkv or .mp4")
    if args.ray is not None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise InputError("--ray needs Ray: pip install 'vs-keep[ray]'")
    encoding = Encoding(fps=source.info.fps, codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)
    restore_resumable(args.input, args.output, options, encoding=encoding,
                      shards=1 if args.shards is None else args.shards, piece=args.piece, ray=args.ray is not None,
                      address=args.ray or None, progress=not args.no_progress, restart=args.restart,
                      background=args.background)
    return 0
