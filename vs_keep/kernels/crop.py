"""Affine face crop straight from the full frame (torch reference of the CuPy kernel).

Why: the CPU face helper converts a region of the frame to float and calls cv2.warpAffine. On a GPU the frame is
already there as uint8 (HWC) or float planes (CHW); sampling it directly avoids converting and copying the frame,
and fuses the [0, 255] -> [-1, 1] normalisation into the same pass.

Geometry follows cv2.warpAffine (pixel centres at integers, output pixel (u, v) samples the frame at
inverse(matrix)·(u, v, 1)), bilinear, taps outside the frame take the constant `border` value (cv2.BORDER_CONSTANT).
cv2 additionally rounds sample positions to 1/32 pixel; we do not.

Every arithmetic step is one float32 operation in a fixed order, and the CUDA kernel spells out the same steps with
non-contracting intrinsics, so both give the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["affine_crop_torch", "as_chw_view", "bilinear_taps", "sampling_matrices"]


def as_chw_view(frame: Tensor, layout: str) -> Tensor:
    """A (C, H, W) view of `frame` without copying: layout "hwc" (packed, e.g. decoded video) or "chw" (planar)."""
    if frame.ndim != 3:
        raise InputError(f"frame must be a 3-D tensor (H, W, C) or (C, H, W), got shape {tuple(frame.shape)}")
    if layout == "hwc":
        return frame.permute(2, 0, 1)
    if layout == "chw":
        return frame
    raise InputError(f"layout must be 'hwc' or 'chw', got {layout!r}")


def sampling_matrices(matrices: np.ndarray | Tensor | Sequence[np.ndarray], *, invert: bool) -> np.ndarray:
    """(N, 6) float32 rows (a, b, c, d, e, f): output pixel (u, v) samples the source at (a·u + b·v + c, d·u + e·v + f).

    `matrices` are (N, 2, 3) or (2, 3) affine maps; with invert=True they map source -> output (alignment matrices,
    frame -> crop) and are inverted in float64 first, as cv2.warpAffine does.
    """
    m = np.asarray(matrices.detach().cpu().numpy() if isinstance(matrices, Tensor) else matrices, dtype=np.float64)
    m = m.reshape(-1, 2, 3)
    if invert:
        lin = m[:, :, :2]
        det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
        if np.any(np.abs(det) < 1e-12):
            raise InputError("affine matrix is singular (zero scale); cannot invert it")
        inv_lin = np.stack([np.stack([lin[:, 1, 1], -lin[:, 0, 1]], 1), np.stack([-lin[:, 1, 0], lin[:, 0, 0]], 1)], 1) / det[:, None, None]
        t = -np.einsum("nij,nj->ni", inv_lin, m[:, :, 2])
        m = np.concatenate([inv_lin, t[:, :, None]], axis=2)
    return np.ascontiguousarray(m.reshape(-1, 6), dtype=np.float32)


def bilinear_taps(sx: Tensor, sy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer top-left tap (x0, y0) and the float32 fractions (fx, fy) of sample positions."""
    x0f, y0f = torch.floor(sx), torch.floor(sy)
    return x0f.long(), y0f.long(), sx - x0f, sy - y0f


def _lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return a + t * (b - a)  # three rounded float32 ops; the kernel uses __fsub_rn, __fmul_rn, __fadd_rn


def affine_crop_torch(
    src: Tensor, coef: Tensor, fill: Tensor, size: int, scale: float, offset: float, out_dtype: torch.dtype
) -> Tensor:
    """Crops (N, C, size, size) `value·scale + offset` of a (C, H, W) view `src` (uint8 / float16 / float32) for
    the (N, 6) sampling rows `coef` (`sampling_matrices(..., invert=True)`); `fill` (C,) float32 is the border value
    in frame units. Only the frame region the crops touch is converted to float32. `vs_keep.kernels.affine_crop`
    checks the arguments; the CuPy twin takes the same ones."""
    c, h, w = src.shape
    n = coef.shape[0]
    if n == 0:
        return torch.zeros((0, c, size, size), dtype=out_dtype, device=src.device)
    grid = torch.arange(size, device=src.device, dtype=torch.float32)
    u, v = grid[None, None, :], grid[None, :, None]
    a, b, cc, d, e, f = (coef[:, i, None, None] for i in range(6))
    sx = (a * u + b * v) + cc  # (N, S, S)
    sy = (d * u + e * v) + f
    x0, y0, fx, fy = bilinear_taps(sx, sy)
    # the frame box all in-frame taps fall into: convert only that to float32
    rx0, ry0 = int(x0.min().clamp(0, w - 1)), int(y0.min().clamp(0, h - 1))
    rx1, ry1 = int((x0.max() + 1).clamp(0, w - 1)), int((y0.max() + 1).clamp(0, h - 1))
    roi = src[:, ry0 : ry1 + 1, rx0 : rx1 + 1].to(torch.float32)
    rh, rw = roi.shape[1:]

    def tap(yi: Tensor, xi: Tensor) -> Tensor:
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        val = roi[:, (yi - ry0).clamp(0, rh - 1), (xi - rx0).clamp(0, rw - 1)]  # (C, N, S, S)
        return torch.where(inside, val, fill[:, None, None, None])

    top = _lerp(tap(y0, x0), tap(y0, x0 + 1), fx)
    bot = _lerp(tap(y0 + 1, x0), tap(y0 + 1, x0 + 1), fx)
    out = _lerp(top, bot, fy)
    if scale != 1.0 or offset != 0.0:
        out = out * torch.tensor(scale, dtype=torch.float32) + torch.tensor(offset, dtype=torch.float32)
    return out.permute(1, 0, 2, 3).contiguous().to(out_dtype)
