"""cv2-compatible Gaussian blur and erosion in torch, so the GPU face path filters like the CPU face helper.

The face helper low-pass filters faces before shrinking them (anti-aliasing) and feathers the paste mask with
cv2.erode + cv2.GaussianBlur. These twins use cv2's kernel sizes and weights (including its fixed 3/5/7-tap
tables for sigma <= 0) and its border rules, and run on any torch device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cv2_gaussian_kernel", "erode", "gaussian_blur"]

_SMALL_TABLES = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def cv2_gaussian_kernel(ksize: int, sigma: float) -> Tensor:
    """cv2.getGaussianKernel(ksize, sigma) as float64: fixed tables for odd ksize <= 7 and sigma <= 0."""
    if sigma <= 0 and ksize in _SMALL_TABLES:
        k = torch.tensor(_SMALL_TABLES[ksize], dtype=torch.float64)
    else:
        s = sigma if sigma > 0 else ((ksize - 1) * 0.5 - 1) * 0.3 + 0.8
        x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) * 0.5
        k = torch.exp(-0.5 / (s * s) * x * x)
    return k / k.sum()


def ksize_for_sigma(sigma: float) -> int:
    """cv2's kernel size for ksize=(0, 0) on float images: round(8·sigma + 1), made odd."""
    return int(math.floor(sigma * 4 * 2 + 1 + 0.5)) | 1


def _reflect_index(n: int, pad: int, reflect101: bool, device: torch.device) -> Tensor:
    """cv2.borderInterpolate for REFLECT (fedcba|abcdef) or REFLECT_101 (gfedcb|abcdefg), any pad length: numpy's
    "symmetric" and "reflect" padding of the indices."""
    idx = np.pad(np.arange(n), pad, mode="reflect" if reflect101 else "symmetric")
    return torch.from_numpy(idx).to(device)


def gaussian_blur(x: Tensor, *, sigma: float = 0.0, ksize: int | None = None, border: str = "reflect101") -> Tensor:
    """Separable Gaussian blur of (C, H, W) or (H, W) float32 like cv2.GaussianBlur (rows first, then columns).

    ksize None: cv2's size for `sigma`; sigma <= 0: cv2's sigma for `ksize`. border: "reflect101" (cv2 default)
    or "reflect" (cv2.BORDER_REFLECT, what the face helper uses for anti-aliasing).
    """
    if border not in ("reflect", "reflect101"):
        raise ValueError(f"border must be 'reflect' or 'reflect101', got {border!r}")
    ksize = ksize_for_sigma(sigma) if ksize is None else int(ksize)
    if ksize <= 1:
        return x.clone()
    squeeze = x.ndim == 2
    img = x[None] if squeeze else x
    c, h, w = img.shape
    k = cv2_gaussian_kernel(ksize, sigma).to(device=x.device, dtype=torch.float32)
    r = ksize // 2
    rows = img[:, :, _reflect_index(w, r, border == "reflect101", x.device)]
    out = F.conv2d(rows[:, None], k.view(1, 1, 1, ksize))[:, 0]
    cols = out[:, _reflect_index(h, r, border == "reflect101", x.device), :]
    out = F.conv2d(cols[:, None], k.view(1, 1, ksize, 1))[:, 0]
    return out[0] if squeeze else out


def erode(x: Tensor, k: int) -> Tensor:
    """cv2.erode of a (H, W) float map with a k×k square (anchor k//2; 3×3 when k <= 0), border ignored."""
    if k <= 0:
        k = 3
    if k == 1:
        return x.clone()
    lo = k // 2
    hi = k - 1 - lo
    # a square's minimum is separable: rows, then columns (2k comparisons per pixel instead of k²)
    rows = F.max_pool2d(F.pad(-x[None, None], (lo, hi, 0, 0), value=-math.inf), (1, k), stride=1)
    return -F.max_pool2d(F.pad(rows, (0, 0, lo, hi), value=-math.inf), (k, 1), stride=1)[0, 0]
