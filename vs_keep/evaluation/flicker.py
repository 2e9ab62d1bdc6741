"""Constructed flicker: one face repeated with the per-frame jitter a generative restorer adds, so a temporal
stabilizer can be measured against a known answer (the bench, `scripts/temporal_bench.py`, and its tests)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["jittered_frames"]


def jittered_frames(face: np.ndarray, count: int, seed: int, *, shift: float = 1.0,
                    drift: tuple[float, float] = (0.0, 0.0)) -> list[np.ndarray]:
    """`count` frames of `face` ((S, S, 3) float32 in [0, 1]). Per frame: rotation σ 0.4°, scale σ 0.4 %, shift
    σ `shift` px plus `drift`·t px; gain σ 5 %, per-channel gain σ 2 %, offset σ 0.02, a linear shading ramp
    σ 0.05 in a random direction; Gaussian noise σ 0.01. Deterministic for a given seed."""
    size = face.shape[0]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    frames = []
    for t in range(count):
        m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.normal(0, 0.4), 1 + rng.normal(0, 0.004))
        m[:, 2] += rng.normal(0, shift, 2) + (drift[0] * t, drift[1] * t)
        f = cv2.warpAffine(face, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        theta = rng.uniform(0, 2 * np.pi)
        shade = rng.normal(0, 0.05) * (np.cos(theta) * xx + np.sin(theta) * yy)
        f = f * (1 + rng.normal(0, 0.05)) * (1 + rng.normal(0, 0.02, 3)) + rng.normal(0, 0.02) + shade[..., None]
        frames.append(np.clip(f + rng.normal(0, 0.01, f.shape), 0, 1).astype(np.float32))
    return frames
