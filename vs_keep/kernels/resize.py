"""cv2.resize's INTER_AREA and INTER_LINEAR as separable weight matrices, so a frame on the GPU is resized there.

Why matrices: MTCNN's image pyramid and its R-/O-Net crops use cv2.resize(INTER_AREA), which averages source
pixels by their fractional overlap with each output pixel (a plain box average only for whole-number ratios;
torch's `area` mode rounds the cell borders instead). One (out, in) matrix per axis reproduces cv2's weights
exactly, and `Wy @ image @ Wx.T` is two small GEMMs on any device. Weights are built in float64 on the CPU and
cached per size; only float32 rounding of the sums differs from cv2.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["area_matrix", "linear_matrix", "resize_area", "resize_linear"]


@lru_cache(maxsize=512)
def _area_np(n_in: int, n_out: int, both_down: bool) -> np.ndarray:
    """(n_out, n_in) float64 weights of cv2 INTER_AREA along one axis.

    both_down: cv2 takes its area path only when neither axis is enlarged; otherwise both axes use the 2-tap
    "area" coefficients of its generic resizer."""
    w = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    if both_down:
        for dx in range(n_out):
            f1 = dx * scale
            f2 = f1 + scale
            cell = min(scale, n_in - f1)
            s1, s2 = math.ceil(f1), math.floor(f2)
            s2 = min(s2, n_in - 1)
            s1 = min(s1, s2)
            if s1 - f1 > 1e-3:
                w[dx, s1 - 1] += (s1 - f1) / cell
            for sx in range(s1, s2):
                w[dx, sx] += 1.0 / cell
            if f2 - s2 > 1e-3:
                w[dx, s2] += min(min(f2 - s2, 1.0), cell) / cell
        return w
    inv = n_out / n_in
    for dx in range(n_out):
        sx = math.floor(dx * scale)
        fx = (dx + 1) - (sx + 1) * inv
        fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        taps = ((sx, 1.0 - fx), (sx + 1, fx))
        for s, wt in taps:
            w[dx, min(max(s, 0), n_in - 1)] += wt
    return w


@lru_cache(maxsize=512)
def _linear_np(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of cv2 INTER_LINEAR (half-pixel centres, edge taps clamped)."""
    w = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for dx in range(n_out):
        f = (dx + 0.5) * scale - 0.5
        sx = math.floor(f)
        f -= sx
        if sx < 0:
            sx, f = 0, 0.0
        if sx >= n_in - 1:
            sx, f = n_in - 1, 0.0
        w[dx, sx] += 1.0 - f
        w[dx, min(sx + 1, n_in - 1)] += f
    return w


def area_matrix(n_in: int, n_out: int, both_down: bool = True, device: torch.device | str = "cpu") -> Tensor:
    return torch.from_numpy(_area_np(int(n_in), int(n_out), bool(both_down))).to(device=device, dtype=torch.float32)


def linear_matrix(n_in: int, n_out: int, device: torch.device | str = "cpu") -> Tensor:
    return torch.from_numpy(_linear_np(int(n_in), int(n_out))).to(device=device, dtype=torch.float32)


def resize_area(x: Tensor, height: int, width: int) -> Tensor:
    """cv2.resize(x, (width, height), interpolation=INTER_AREA) of float (..., H, W) on x's device."""
    h, w = x.shape[-2:]
    down = height <= h and width <= w
    wy = area_matrix(h, height, down, x.device)
    wx = area_matrix(w, width, down, x.device)
    return wy @ x.to(torch.float32) @ wx.T


def resize_linear(x: Tensor, height: int, width: int) -> Tensor:
    """cv2.resize(x, (width, height), interpolation=INTER_LINEAR) of float (..., H, W) (float weights: uint8
    frames differ from cv2's 11-bit fixed point by at most one level)."""
    h, w = x.shape[-2:]
    return linear_matrix(h, height, x.device) @ x.to(torch.float32) @ linear_matrix(w, width, x.device).T
