#!/usr/bin/env python3
"""Frames per second of the engine path users run, on CUDA: JSON on stdout (and --out).

Two numbers per precision (fp32 / fp16), with full-size KEEP (synthetic weights: the speed is the same as the
official ones'):
- `fps_crops` (with `face_size`, 512 for the full model): the model on aligned crops, chunk by chunk (what `vs-keep restore --aligned` runs);
- `fps_1080p_one_face`: `build_engine` + `restore_stream` (what `vs-keep restore` and the VapourSynth filter run)
  on 1920x1080 uint8 frames with one real face panning: detection, smoothing, crop, KEEP, paste-back, the frame
  copied to the GPU once and back once (`kernels.select.frame_device`).
The first chunk of each run is a warm-up (cuDNN autotuning, CuPy compile and self-check) and not timed.
Also reported: CuPy present, kernels that failed their self-check (torch twins used), the frame device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing


def _frames(n: int, height: int = 1080, width: int = 1920) -> list:
    """n frames: a grey-gradient background with the astronaut's face (~230 px) moving 2 px per frame."""
    import cv2
    import numpy as np

    try:
        import skimage.data

        face = skimage.data.astronaut()[20:260, 120:360]
    except Exception:  # noqa: BLE001 - without scikit-image: no face, the run then times detection + model only
        face = np.random.default_rng(0).integers(0, 256, (240, 240, 3), dtype=np.uint8)
    base = np.tile(np.linspace(40, 200, width, dtype=np.float32)[None, :, None], (height, 1, 3)).astype(np.uint8)
    out = []
    for i in range(n):
        frame = base.copy()
        x, y = 800 + 2 * i, 400 + i
        frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        out.append(cv2.GaussianBlur(frame, (3, 3), 0))
    return out


def measure(weights: str, device: str, fp16: bool, chunk: int, chunks: int) -> dict:
    import torch

    from vs_keep.engine import EngineOptions, build_engine, load_model
    from vs_keep.face import restorer_factory
    from vs_keep.kernels.select import cupy_available, self_check_failures
    from vs_keep.stream import restore_stream

    opts = EngineOptions(weights=weights, device=device, fp16=fp16, chunk=chunk, scene_reset=False, download=False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    res: dict = {"precision": "fp16" if fp16 else "fp32", "chunk": chunk}

    # aligned crops (512 for the full model): the model alone, one chunk per call (restore --aligned)
    net, autocast = load_model(opts)
    restorer = restorer_factory(net, autocast=autocast).restorer
    size = restorer.face_size  # 512 for the full model
    res["face_size"] = size
    clip = torch.rand(chunk, 3, size, size, device=device) * 2 - 1
    restorer(clip)
    sync()
    t = time.perf_counter()
    for _ in range(chunks):
        restorer(clip)
    sync()
    res["fps_crops"] = round(chunk * chunks / (time.perf_counter() - t), 3)
    del net, restorer

    # 1080p, one face: the engine the CLI and the filter run
    engine = build_engine(opts)
    frames = _frames(chunk * (chunks + 1))
    stream = restore_stream(engine, iter(frames), len(frames))
    faces = 0
    for _ in range(chunk):  # warm-up chunk
        faces += len(next(stream).faces)
    sync()
    t = time.perf_counter()
    for r in stream:
        faces += len(r.faces)
    sync()
    res["fps_1080p_one_face"] = round(chunk * chunks / (time.perf_counter() - t), 3)
    res["faces_per_frame"] = round(faces / len(frames), 3)
    res["frame_device"] = str(engine.frame_device)
    res["cupy"] = cupy_available() if device.startswith("cuda") else False
    res["kernel_self_check_failures"] = {f"{k[0]}@{k[1]}": v for k, v in self_check_failures().items()}
    engine.close()
    if device.startswith("cuda"):
        res["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="full", choices=("full", "small"), help="synthetic KEEP size")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("--chunk", type=int, default=10, help="frames per chunk")
    p.add_argument("--chunks", type=int, default=2, help="timed chunks after the warm-up chunk")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    import logging

    import torch

    from vs_keep.models.synthetic import write_synthetic_checkpoint

    logging.basicConfig(level=logging.INFO, format="gpu_engine_fps: %(message)s", stream=sys.stderr)
    report: dict = {"device": args.device, "model": args.model, "torch": torch.__version__, "cuda": torch.version.cuda}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            report["error"] = f"no CUDA device visible to torch {torch.__version__}"
            print(json.dumps(report, indent=1))
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
            return 1
        report["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="vs-keep-fps-") as tmp:
        weights = str(write_synthetic_checkpoint(Path(tmp) / f"keep_{args.model}.pth", "keep", args.model))
        report["runs"] = []
        for prec in [s.strip() for s in args.precisions.split(",") if s.strip()]:
            try:
                report["runs"].append(measure(weights, args.device, prec == "fp16", args.chunk, args.chunks))
            except Exception as exc:  # noqa: BLE001 - one failed setting must not lose the others
                report["runs"].append({"precision": prec, "error": f"{exc.__class__.__name__}: {exc}"})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
