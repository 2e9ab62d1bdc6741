"""What resumable pieces cost with a lossy codec: a real-ish clip encoded once vs in pieces of P frames (each piece
its own encoder, so its own GOP and rate control, as `vs_keep.resume` writes them). Prints JSON on stdout.

    PYTHONPATH=. python scripts/resume_bench.py [--frames 2000] [--pieces 250 500 1000] [--size 640x360]

The clip: skimage's public-domain photos, 300 frames each (scene cuts off the piece edges), slowly zoomed and
panned with sub-pixel motion and film-like grain (sigma 3 levels), so x264 sees real texture, motion and noise.
Each encode is x264 crf 18 preset medium (the CLI's defaults); size = sum of video packet bytes (no container
overhead); PSNR = mean over frames of RGB PSNR against the source frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "hubble_deep_field", "gravel")


def clip(frames: int, width: int, height: int, scene: int = 300):
    """Yield the bench clip's RGB uint8 frames (deterministic: fixed seed)."""
    import cv2
    import skimage.data

    rng = np.random.default_rng(0)
    for n in range(frames):
        name = IMAGES[(n // scene) % len(IMAGES)]
        if n % scene == 0:
            img = getattr(skimage.data, name)()
            img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
            img = cv2.resize(img, (width * 2, height * 2), interpolation=cv2.INTER_AREA)
        t = (n % scene) / scene
        zoom = 1.6 + 0.3 * t
        m = np.array([[zoom / 2, 0, -0.25 * width * t], [0, zoom / 2, -0.15 * height * t]], dtype=np.float64)
        frame = cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        grain = rng.normal(0, 3, frame.shape)
        yield np.clip(frame + grain, 0, 255).astype(np.uint8)


def encode(frames: list[np.ndarray], pieces: list[tuple[int, int]], folder: Path) -> tuple[int, float, float]:
    """(video bytes, mean PSNR dB, seconds) of `frames` encoded as one segment per piece."""
    import av

    from vs_keep.video import FrameSink

    size, scores, t0 = 0, [], time.perf_counter()
    for k, (a, b) in enumerate(pieces):
        path = folder / f"p{k}.mkv"
        with FrameSink(path, fps=Fraction(25), codec="libx264", crf=18, preset="medium") as sink:
            for f in frames[a:b]:
                sink.write(f)
        with av.open(str(path)) as c:
            size += sum(p.size for p in c.demux(video=0) if p.pts is not None)
        with av.open(str(path)) as c:
            for f, src in zip(c.decode(video=0), frames[a:b]):
                mse = float(np.mean((f.to_ndarray(format="rgb24").astype(np.float64) - src) ** 2))
                scores.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
        path.unlink()
    return size, float(np.mean(scores)), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--pieces", type=int, nargs="+", default=[250, 500, 1000])
    p.add_argument("--size", default="640x360")
    a = p.parse_args()
    w, h = map(int, a.size.split("x"))
    frames = list(clip(a.frames, w, h))
    from vs_keep.runtime.cpu_choice import cpu_kind

    result = {"cpu": cpu_kind(), "frames": a.frames, "size": a.size,
              "codec": "libx264 crf 18 preset medium", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        whole = encode(frames, [(0, a.frames)], Path(tmp))
        result["runs"].append({"piece": a.frames, "bytes": whole[0], "psnr_db": round(whole[1], 3),
                               "seconds": round(whole[2], 1)})
        for piece in a.pieces:
            edges = list(range(0, a.frames, piece)) + [a.frames]
            got = encode(frames, list(zip(edges, edges[1:])), Path(tmp))
            result["runs"].append({"piece": piece, "bytes": got[0], "psnr_db": round(got[1], 3),
                                   "seconds": round(got[2], 1), "size_vs_one": round(got[0] / whole[0] - 1, 4),
                                   "psnr_vs_one_db": round(got[1] - whole[1], 3)})
            print(json.dumps(result["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
