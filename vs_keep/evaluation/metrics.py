"""PSNR and SSIM with BasicSR's definitions (the ones KEEP's own code reports).

PSNR: one MSE over all pixels and channels of 8-bit images, peak 255. SSIM: 11-tap Gaussian window, sigma 1.5,
constants (0.01*255)^2 and (0.03*255)^2, statistics over the "valid" region only (5 px border dropped), computed
per channel and averaged. These equal scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`, which the tests check.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError

__all__ = ["PSNR_CAP_DB", "prepare", "psnr", "ssim"]

# Identical frames have infinite PSNR; JSON has no infinity, so a perfect frame reports this cap instead.
PSNR_CAP_DB = 100.0

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WINDOW = 11
_SIGMA = 1.5


def prepare(img: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> np.ndarray:
    """uint8 RGB -> float64 in [0, 255], optionally cropped and reduced to BT.601 luma (16-235) like BasicSR."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"metrics.prepare: img must be HxWx3 uint8 RGB, got {img.shape} {img.dtype}")
    out = img.astype(np.float64)
    if crop_border:
        out = out[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        # BasicSR's to_y_channel on [0, 1] data: 16 + 65.481 R + 128.553 G + 24.966 B, then back to 0-255 scale.
        rgb = out / 255.0
        y = 16.0 + rgb @ np.array([65.481, 128.553, 24.966])
        out = y[:, :, None]
    return out


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR in dB of two prepared float64 images (see `prepare`); capped at PSNR_CAP_DB for identical inputs."""
    mse = float(np.mean((ref - out) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


_TAPS = cv2.getGaussianKernel(_WINDOW, _SIGMA)
_WIN = _TAPS @ _TAPS.T


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, _WIN)[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = filt(a * a) - mu_a2
    var_b = filt(b * b) - mu_b2
    cov = filt(a * b) - mu_ab
    num = (2 * mu_ab + _C1) * (2 * cov + _C2)
    den = (mu_a2 + mu_b2 + _C1) * (var_a + var_b + _C2)
    return float(np.mean(num / den))


def ssim(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean SSIM of two prepared float64 images, averaged over channels."""
    if ref.shape[0] < _WINDOW or ref.shape[1] < _WINDOW:
        raise InputError(f"SSIM needs images of at least {_WINDOW}x{_WINDOW} px, got {ref.shape[1]}x{ref.shape[0]}")
    return float(np.mean([_ssim_plane(ref[:, :, c], out[:, :, c]) for c in range(ref.shape[2])]))
