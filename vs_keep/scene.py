"""Scene-cut detection from two consecutive frames alone (used by the VapourSynth filter and the CLI).

KEEP carries a recurrent state (Kalman filter, previous features, flow-warped memory) from frame to frame; across
a cut it would warp the previous shot's face into the new one, so the state must reset there. Sources rarely
carry `_SceneChangePrev`, so the filter decides itself. The decision must be a pure function of frames n-1 and n
(a random-access filter asks frames in any order, and output n must not depend on that order), deterministic and
cheap next to restoration.

Method: both frames are reduced to 64-px-wide thumbnails (area average: grain and small motion average out).
A cut needs both a large change of the colour distribution (total-variation distance of 16-bin per-channel
histograms; a pan or a moving face keeps the distribution) and of the picture itself (mean absolute difference
of the thumbnails, each standardised per channel to mean 0 and deviation 1: a fade, a grade or a flash keeps the
standardised picture). Thresholds from real photo clips with grain (tests/test_scene.py): within shots, pans up
to 10 % of the width per frame reach a histogram distance of 0.11, fades and flashes a standardised difference
of 0.27; across 182 cuts between 14 different shots the minima were 0.15 and 0.81. Known misses: two shots with
the same colour distribution (e.g. two crops of one textured photo).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["BINS", "DIFF_THRESHOLD", "HIST_THRESHOLD", "THUMB_WIDTH", "cut_scores", "is_cut", "thumbnail"]

THUMB_WIDTH = 64
BINS = 16
#: total-variation distance of the colour histograms (0 = same distribution, 1 = disjoint)
HIST_THRESHOLD = 0.13
#: mean absolute difference of the standardised thumbnails (in standard deviations)
DIFF_THRESHOLD = 0.5


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """(h, 64, C) float32 in [0, 1] from an (H, W, C) uint8 or float [0, 1] frame (area average)."""
    img = np.asarray(frame)
    if img.ndim == 2:
        img = img[..., None]
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.clip(img.astype(np.float32, copy=False), 0.0, 1.0)
    h, w = img.shape[:2]
    tw = min(THUMB_WIDTH, w)
    th = max(1, int(round(h * tw / w)))
    small = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
    return small.reshape(th, tw, -1)


def _histograms(thumb: np.ndarray) -> np.ndarray:
    idx = np.minimum((thumb * BINS).astype(np.int64), BINS - 1)
    count = idx.shape[0] * idx.shape[1]
    return np.stack([np.bincount(idx[..., c].ravel(), minlength=BINS) for c in range(idx.shape[2])]) / count


def _standardised(thumb: np.ndarray) -> np.ndarray:
    mean, std = thumb.mean(axis=(0, 1)), thumb.std(axis=(0, 1))
    return (thumb - mean) / np.maximum(std, 1.0 / 255.0)


def cut_scores(prev: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(histogram distance, mean absolute difference) between two frames of the same size."""
    a, b = thumbnail(prev), thumbnail(cur)
    if a.shape != b.shape:
        return 1.0, 1.0  # a size change is a cut
    hist = 0.5 * float(np.abs(_histograms(a) - _histograms(b)).sum(axis=1).mean())
    # standardised per channel: a fade, a grade or a flash changes mean and contrast, a new picture the rest
    diff = float(np.abs(_standardised(a) - _standardised(b)).mean())
    return hist, diff


def is_cut(prev: np.ndarray, cur: np.ndarray) -> bool:
    """True when `cur` starts a new shot after `prev`."""
    hist, diff = cut_scores(prev, cur)
    return hist > HIST_THRESHOLD and diff > DIFF_THRESHOLD
