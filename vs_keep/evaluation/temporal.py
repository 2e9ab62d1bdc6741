"""Temporal stability: warping error between consecutive frames (Lai et al., ECCV 2018 style), no weights needed.

Flow comes from OpenCV's DIS on each video's own frames. Frame t+1 is warped back onto frame t; pixels where the
forward and backward flows disagree (occlusions, disocclusions) or that leave the image are masked out, using the
forward-backward test of Sundaram et al. The error is the masked mean squared RGB difference on a [0, 1] scale,
reported x1000 (the "E_warp (x10^-3)" convention of video papers).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DisFlow", "EWARP_SCALE", "WarpingError", "occlusion_mask", "warp"]

EWARP_SCALE = 1000.0


class DisFlow:
    """Dense optical flow (DIS, 'medium' preset) on grayscale frames; one instance reused to avoid realloc."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, a_gray: np.ndarray, b_gray: np.ndarray) -> np.ndarray:
        """Flow field (H,W,2) float32 such that a(x) ~ b(x + flow(x))."""
        return self._dis.calc(a_gray, b_gray, None)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `image` at x + flow(x) (bilinear); out-of-image samples get border values (masked elsewhere)."""
    h, w = flow.shape[:2]
    gx, gy = _grid(h, w)
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Valid-pixel mask (H,W) bool from forward flow t->t+1 and backward flow t+1->t.

    A pixel is trusted when following fw then bw comes back near where it started,
    |fw + bw(x+fw)|^2 <= 0.01 (|fw|^2 + |bw(x+fw)|^2) + 0.5, and when x+fw stays inside the frame."""
    h, w = fw.shape[:2]
    bw_at = warp(bw, fw)
    diff = fw + bw_at
    lhs = np.sum(diff * diff, axis=-1)
    rhs = 0.01 * (np.sum(fw * fw, axis=-1) + np.sum(bw_at * bw_at, axis=-1)) + 0.5
    gx, gy = _grid(h, w)
    tx, ty = gx + fw[..., 0], gy + fw[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return (lhs <= rhs) & inside


class WarpingError:
    """Streaming warping error of one video: feed frames in order, read one value per consecutive pair."""

    def __init__(self) -> None:
        self._flow = DisFlow()
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # the previous frame and its grey image
        self.values: list[float] = []

    def update(self, frame: np.ndarray) -> None:
        """Add the next RGB uint8 frame; from the second on, appends its error against the previous frame."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self._prev is not None:
            self.values.append(self._pair_error(*self._prev, frame, gray))
        self._prev = frame, gray

    def _pair_error(self, a: np.ndarray, a_gray: np.ndarray, b: np.ndarray, b_gray: np.ndarray) -> float:
        """Warping error of frame b warped onto frame a (RGB uint8), x1000 on a [0, 1] scale."""
        fw = self._flow(a_gray, b_gray)
        bw = self._flow(b_gray, a_gray)
        mask = occlusion_mask(fw, bw)
        if not mask.any():
            return float("nan")
        b_warped = warp(b.astype(np.float32) / 255.0, fw)
        err = np.sum((a.astype(np.float32) / 255.0 - b_warped) ** 2, axis=-1)
        # Sum over channels, mean over valid pixels, matching the usual per-pixel L2 definition.
        return float(err[mask].mean() * EWARP_SCALE)
