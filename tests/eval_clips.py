"""Short real-photo test clips for the evaluation tests (skimage's public-domain images, panned to make motion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def panning_frames(n: int = 12, size: int = 128, image: str = "astronaut", step: int = 2,
                   origin: tuple[int, int] = (150, 40)) -> list[np.ndarray]:
    """`n` crops of `size`^2 px sliding diagonally over a skimage photo, `step` px a frame (real texture and motion).

    The default window over astronaut holds Eileen Collins' face (about 90 px wide at size 192+)."""
    import skimage.data

    img = getattr(skimage.data, image)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    x0, y0 = origin
    frames = []
    for i in range(n):
        x, y = x0 + i * step, y0 + i * step // 2
        crop = img[y:y + size, x:x + size]
        assert crop.shape[:2] == (size, size), (image, x, y, size)
        frames.append(np.ascontiguousarray(crop))
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Lossless video (FFV1 .mkv / libx264rgb .mp4) through the package's own PyAV writer."""
    from fractions import Fraction

    from vs_keep.video import FrameSink

    with FrameSink(path, fps=Fraction(fps), lossless=True) as writer:
        for f in frames:
            writer.write(f)
    return path
