"""`vs-keep eval --reference REF --restored OUT`: fidelity, identity, landmark and temporal metrics (+ plots)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, help="ground-truth video or image folder")
    parser.add_argument("--restored", required=True, help="restored video or image folder, frame-aligned with it")
    parser.add_argument("--input", help="the degraded input clip: adds its column to the flicker plot and its "
                                        "warping error (resized to the reference size)")
    parser.add_argument("--json", metavar="FILE", help="write the report here (default: print it on stdout)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into this folder")
    parser.add_argument("--y", action="store_true", help="PSNR/SSIM on the Y channel (BT.601) instead of RGB")
    parser.add_argument("--crop-border", type=int, default=0, help="pixels dropped at each border for PSNR/SSIM")
    parser.add_argument("--lpips-weights", nargs="+", metavar="FILE",
                        help="LPIPS-VGG weights: torchvision vgg16-397923af.pth (+ lpips v0.1 vgg.pth) or a full "
                             "LPIPS state dict")
    parser.add_argument("--arcface", metavar="MODEL.onnx",
                        help="ArcFace ONNX model (input 1x3x112x112, [-1,1]) for IDS as in the paper")
    parser.add_argument("--arcface-bgr", action="store_true", help="the ArcFace model expects BGR input")
    parser.add_argument("--no-identity", action="store_true", help="skip identity similarity")
    parser.add_argument("--landmarks", default="auto", choices=["auto", "5", "68", "none"],
                        help="AKD landmark set: 5 = our detector, 68 = dlib (identity extra); auto picks 5, then 68")
    parser.add_argument("--no-temporal", action="store_true", help="skip the warping error")
    parser.add_argument("--detector", default="mtcnn", help="face detector name (default mtcnn)")
    parser.add_argument("--min-face", type=float, default=None, metavar="PX",
                        help="smallest face side the detector searches (default: detector's own); larger is faster")
    parser.add_argument("--device", default="cpu", help="torch device for LPIPS and the detector (default cpu)")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--flicker-column", type=int, default=None,
                        help="x of the pixel column for the flicker plot (default: the face's image-left eye)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.report import SUMMARY_KEYS, EvalOptions, evaluate, write_json

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))
    options = EvalOptions(
        y_channel=args.y, crop_border=args.crop_border, lpips_weights=args.lpips_weights, arcface=args.arcface,
        arcface_bgr=args.arcface_bgr, identity=not args.no_identity, landmarks=args.landmarks,
        temporal=not args.no_temporal, detector=args.detector, min_face=args.min_face, device=args.device,
        max_frames=args.frames,
        flicker_column=args.flicker_column, progress=not args.no_progress,
    )
    result = evaluate(args.reference, args.restored, degraded_input=args.input, options=options)
    report = result.to_dict()
    if args.json:
        write_json(result, args.json)
    else:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    mean = report["mean"]
    print(f"vs-keep eval: {result.frames} frames", file=sys.stderr)
    for key in SUMMARY_KEYS:
        print(f"  {key:<16}{_fmt(mean.get(key))}", file=sys.stderr)
    for reason in report["info"]["skipped"].values():
        print(f"  skipped: {reason}", file=sys.stderr)
    if args.plots:
        from ..evaluation.plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"  plot: {path}", file=sys.stderr)
    if args.json:
        print(f"  report: {args.json}", file=sys.stderr)
    return 0
