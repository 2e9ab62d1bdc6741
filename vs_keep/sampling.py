"""Resampling arithmetic shared by the host (cv2) and device (torch/CUDA) warps: how much a warp shrinks and the
prefilter that keeps it from aliasing. A leaf module so that `face` and `kernels` both use one copy."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["antialias_sigma", "warp_scale"]


def warp_scale(m: np.ndarray) -> float:
    """Output pixels per input pixel of a similarity/affine matrix (geometric mean over the axes)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


def antialias_sigma(scale: float) -> float:
    """Gaussian prefilter sigma (input pixels) before resampling by `scale` (< 1 shrinks).

    sqrt(1/s^2 - 1)/2 brings the source band close to the output Nyquist limit while leaving room for the blur
    bilinear sampling adds itself (so it fades to 0 as the scale approaches 1).
    """
    if scale >= 1.0:
        return 0.0
    return 0.5 * math.sqrt(1.0 / (scale * scale) - 1.0)
