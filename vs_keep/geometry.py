"""Warp geometry shared by the host (cv2) and device (torch/CUDA) paths: affine inversion, where a face pastes in
the output frame, how much a warp shrinks and the prefilter that keeps it from aliasing. A leaf module (it imports
nothing from vs_keep) so that `face` and `kernels` use one copy without importing each other."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["antialias_sigma", "invert_affine", "paste_geometry", "paste_matrix", "square_box", "warp_scale"]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix (cv2's arithmetic, so exact mode matches the official code bit for bit)."""
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


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


def paste_matrix(matrix: np.ndarray, upscale: int, exact: bool = False) -> np.ndarray:
    """(2, 3) crop -> output-frame matrix for an output `upscale` times the input.

    With pixel centres at integers, output x_o = u·x_i + (u - 1)/2 matches cv2.resize's geometry; the official
    code adds u/2 instead (half an output pixel off), which `exact=True` reproduces.
    """
    inv = invert_affine(matrix) * upscale
    if upscale > 1:
        inv[:, 2] += 0.5 * upscale if exact else 0.5 * (upscale - 1)
    return inv


def paste_geometry(
    matrix: np.ndarray, size: int, upscale: int, frame_size: tuple[int, int], exact: bool = False
) -> tuple[np.ndarray, float, tuple[int, int, int, int]]:
    """The one paste geometry (cv2 path and `kernels.plan_paste`): (inv (2, 3) crop -> output frame, the face's
    side in output pixels, the output-frame box (x0, y0, x1, y1) a paste can change: the face plus the blur margin)."""
    inv = paste_matrix(matrix, upscale, exact)
    side = size * math.sqrt(abs(np.linalg.det(inv[:, :2])))
    box = square_box(inv, size, int(side / 10) + 2 * upscale + 8, frame_size[0], frame_size[1])
    return inv, float(side), box


def square_box(inv: np.ndarray, size: int, margin: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Whole-pixel box (x0, y0, x1, y1) of a height×width frame that the size² square mapped by `inv` (2, 3)
    covers, plus `margin`, clipped to the frame (where a crop samples from, or where a paste can write)."""
    corners = np.array([[-1, -1, 1], [size, -1, 1], [-1, size, 1], [size, size, 1]], np.float64) @ np.asarray(inv).T
    x0 = max(int(math.floor(corners[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + margin + 1, width)
    y1 = min(int(math.ceil(corners[:, 1].max())) + margin + 1, height)
    return x0, y0, x1, y1
