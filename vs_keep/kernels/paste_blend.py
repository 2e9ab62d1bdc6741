"""Paste-back of a restored face into the frame: inverse-affine warp fused with the soft-mask blend.

Why: the CPU helper (`vs_keep.face.paste`) warps the face, a ones-square and the masks with cv2 inside the face's
box of the frame and blends with numpy. On a GPU the frame stays on the device; the masks (a ones-square warped,
eroded, eroded again and blurred, as the official helper does) are computed with torch ops on the box, then one
kernel samples the face and blends it into the canvas in place (`paste_blend`). This module is the torch
reference of that kernel plus the shared geometry and masks; the CuPy kernel repeats `paste_blend_torch`'s
float32 steps in the same order.

The geometry (box, output mapping) is the CPU helper's own (`geometry.paste_geometry`). Differences from the
CPU helper in its default (non-exact) mode: positions are not rounded to cv2's 1/32 pixel, and `paste_face` on a
uint8 canvas rounds after each face (`kernels.paste_frame.paste_faces_tensor`, what the engine runs, blends all faces
into a float canvas and rounds once, like the CPU helper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..geometry import paste_geometry
from .blur import erode, gaussian_blur
from .crop import bilinear_taps, sampling_matrices

__all__ = ["PastePlan", "paste_blend_torch", "paste_masks", "plan_paste", "sample_zero_border"]


@dataclass(frozen=True)
class PastePlan:
    """Geometry of one face paste: `coef` (6,) float32 maps output-frame pixels to crop pixels; `box` (x0, y0, x1,
    y1) is the output-frame region the paste can change; `side` the face's side length in output pixels."""

    coef: np.ndarray
    inv: np.ndarray
    box: tuple[int, int, int, int]
    side: float
    upscale: int


def plan_paste(matrix: np.ndarray, size: int, frame_hw: tuple[int, int], upscale: int = 1) -> PastePlan:
    """Paste geometry for an alignment matrix (2, 3) frame -> crop, a face of size² and an output frame of
    frame_hw (already upscaled): `vs_keep.geometry.paste_geometry` (non-exact mode), the one implementation."""
    inv, side, box = paste_geometry(matrix, int(size), int(upscale), frame_hw)
    coef = sampling_matrices(inv, invert=True)[0]  # output frame -> crop
    return PastePlan(coef=coef, inv=inv, box=box, side=side, upscale=int(upscale))


def _box_coords(coef: Tensor, box: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """Crop positions (qx, qy), (h, w) float32, of the output-frame pixels in `box` under the (6,) rows `coef`."""
    x0, y0, x1, y1 = box
    xs = torch.arange(x0, x1, device=coef.device, dtype=torch.float32)[None, :]
    ys = torch.arange(y0, y1, device=coef.device, dtype=torch.float32)[:, None]
    qx = (coef[0] * xs + coef[1] * ys) + coef[2]
    qy = (coef[3] * xs + coef[4] * ys) + coef[5]
    return qx, qy


def sample_zero_border(img: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
    """Bilinear samples (C, h, w) of a (C, S, S) float32 image at positions (qx, qy); taps outside are 0."""
    c, sh, sw = img.shape
    x0, y0, fx, fy = bilinear_taps(qx, qy)
    zero = img.new_zeros(())

    def tap(yi: Tensor, xi: Tensor) -> Tensor:
        inside = (xi >= 0) & (xi < sw) & (yi >= 0) & (yi < sh)
        return torch.where(inside, img[:, yi.clamp(0, sh - 1), xi.clamp(0, sw - 1)], zero)

    v00, v01 = tap(y0, x0), tap(y0, x0 + 1)
    v10, v11 = tap(y0 + 1, x0), tap(y0 + 1, x0 + 1)
    top = v00 + fx * (v01 - v00)
    bot = v10 + fx * (v11 - v10)
    return top + fy * (bot - top)


def paste_masks(plan: PastePlan, size: int, coef: Tensor, parse_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(eroded, soft) float32 (h, w) maps over the plan's box, as the official helper builds them: the face square
    warped (bilinear), eroded by (2·upscale)², eroded again by 2·w_edge and Gaussian-blurred ((2·w_edge+1)², cv2's
    sigma), w_edge = int(side) // 20; with a parse mask (S, S) in [0, 1], soft = min(soft, warped parse mask).
    coef: `plan.coef` on the maps' device (copied once per face: the blend kernel takes the same tensor)."""
    qx, qy = _box_coords(coef, plan.box)

    def inside_weight(q: Tensor) -> Tensor:  # bilinear weight of the taps that fall on the square (separable)
        i0 = torch.floor(q)
        f = q - i0
        a = ((i0 >= 0) & (i0 < size)).to(torch.float32)
        b = ((i0 + 1 >= 0) & (i0 + 1 < size)).to(torch.float32)
        return (1 - f) * a + f * b

    square = inside_weight(qx) * inside_weight(qy)
    eroded = erode(square, 2 * plan.upscale)
    w_edge = int(plan.side) // 20
    soft = gaussian_blur(erode(eroded, 2 * w_edge), ksize=2 * w_edge + 1, sigma=0.0, border="reflect101")
    if parse_mask is not None:
        parse = sample_zero_border(parse_mask.to(device=coef.device, dtype=torch.float32).reshape(1, size, size), qx, qy)[0]
        soft = torch.minimum(soft, parse)
    return eroded.contiguous(), soft.contiguous()


def paste_blend_torch(
    canvas: Tensor, face: Tensor, coef: Tensor, box: tuple[int, int, int, int], eroded: Tensor, soft: Tensor, unit: float
) -> Tensor:
    """Blend `face` (C, S, S) float32 into the (C, H, W) view `canvas` in place over `box` (a `PastePlan`'s, not
    empty), `coef` (6,) float32 the plan's rows on the canvas's device: canvas = soft·(eroded·face(warped)·unit) +
    (1 - soft)·canvas. canvas: uint8 (rounded, clamped to 0..255), float16 or float32. Returns `canvas`; the CuPy
    twin takes the same arguments."""
    x0, y0, x1, y1 = box
    qx, qy = _box_coords(coef, box)
    restored = sample_zero_border(face.to(torch.float32), qx, qy)
    region = canvas[:, y0:y1, x0:x1]
    pasted = (eroded * restored) * torch.tensor(unit, dtype=torch.float32)
    out = soft * pasted + (1 - soft) * region.to(torch.float32)
    if canvas.dtype == torch.uint8:
        out = out.clamp(0, 255).round()
    region.copy_(out)
    return canvas
