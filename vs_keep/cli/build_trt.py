"""`vs-keep build-trt`: pre-build (and cache) the TensorRT engine of KEEP's codebook decoder.

TensorRT is opt-in (`decoder="tensorrt"`, unmeasured; see the README). The engine is also built lazily on first
use; building it ahead of time keeps the first VapourSynth frame from waiting minutes. Without TensorRT (or a CUDA device) `--onnx-only` still writes the ONNX graph for inspection.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="keep", help="weights name in the cache ('keep') or a .pth path (default: keep)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp32",
                        help="engine precision: fp32 (default) is the one decoder='tensorrt' / --decoder tensorrt uses, fp16 the one with fp16=True / --fp16")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default 4)")
    parser.add_argument("--opt-level", type=int, default=3, help="TensorRT builder optimisation level 0-5 (default 3)")
    parser.add_argument("--cache-dir", help="engine cache directory root (default: $VS_KEEP_HOME or the user cache dir; the engine goes to its trt/ subfolder)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a cached engine exists")
    parser.add_argument("--onnx-only", metavar="PATH", help="only export the decoder's ONNX graph to PATH (no TensorRT needed)")
    parser.add_argument("--download", action="store_true", help="download the weights if they are not cached")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import load
    from ..runtime.backends import TensorRTBackend
    from ..runtime.onnx_export import export_decoder_onnx
    from ..runtime.trt import TensorRTUnavailable
    from ..weights import resolve

    path = resolve(args.model, download=args.download)
    model = load(path, device="cpu", dtype=torch.float32)
    if args.onnx_only:
        out, spec = export_decoder_onnx(model, args.onnx_only)
        print(f"vs-keep build-trt: wrote {out} (inputs {spec.input_shapes()})", file=sys.stderr)
        return 0
    backend = TensorRTBackend(
        device_id=args.device_id, precision=args.precision, workspace_gib=args.workspace, opt_level=args.opt_level,
        cache_dir=args.cache_dir, force_rebuild=args.force,
    )
    try:
        engine = backend.engine_path(model)
    except TensorRTUnavailable as exc:
        print(f"vs-keep build-trt: {exc}; nothing built (decoder='tensorrt' needs it; the default decoder='auto' runs PyTorch)", file=sys.stderr)
        return 1
    print(f"vs-keep build-trt: engine ready: {engine}", file=sys.stderr)
    print(str(engine))
    return 0
