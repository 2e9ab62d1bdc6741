"""Landmark smoothing exactly as the official script, but from a bounded window (random access, streaming).

Official: per coordinate, missing frames are filled by `np.interp` over the frame index (clamping to the first /
last detection at the ends), then `scipy.ndimage.gaussian_filter1d(sigma=5, mode="reflect", truncate=4)` runs
over the whole video. Output frame n only depends on the filled sequence at reflect(n-20 .. n+20), and each filled
value only on the detections bracketing it, so frame n needs the detections in [n-20, n+20] plus the nearest one
on either side of that window, and the sequence's first and last index when the window reaches them.

`smooth_at` is that pure function; it equals the whole-sequence computation up to float64 summation order
(~1e-12).

Ends: reflecting the sequence at its ends ("reflect", official) biases a moving face towards where it will be:
at the first frame of a track the result is a weighted mean of the next 20 positions, about 4 frames of motion
ahead (a face entering the frame at 10 px/frame is pasted 40 px off). With ends="linear" each frame gets the
Gaussian-weighted least-squares line through the positions in its window, evaluated at the frame. Where the
window lies inside the sequence that is exactly the Gaussian mean (the weights are symmetric), so it differs from
the official result only within `radius` frames of an end, where it follows linear motion without bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "ENDS", "SIGMA", "TRUNCATE", "gaussian_radius", "gaussian_weights", "reflect_index", "smooth_at",
]

SIGMA = 5.0
TRUNCATE = 4.0


def gaussian_radius(sigma: float = SIGMA) -> int:
    """Kernel radius as scipy computes it: int(truncate * sigma + 0.5) (20 frames for the official sigma 5)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def gaussian_weights(sigma: float = SIGMA) -> np.ndarray:
    """Normalised (2r+1,) float64 Gaussian taps, the same ones `gaussian_filter1d` uses."""
    r = gaussian_radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return w / w.sum()


def reflect_index(index: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Map indices into [lo, hi] like scipy's mode="reflect" (d c b a | a b c d | d c b a), for any length."""
    n = hi - lo + 1
    if n <= 0:
        raise InputError(f"reflect_index: empty range [{lo}, {hi}]")
    k = np.mod(np.asarray(index) - lo, 2 * n)
    return lo + np.where(k >= n, 2 * n - 1 - k, k)


ENDS = ("reflect", "linear")


def smooth_at(
    frames: Sequence[int] | np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    lo: int,
    hi: int,
    *,
    sigma: float = SIGMA,
    ends: str = "reflect",
) -> np.ndarray:
    """Smoothed values at `frames` of a sequence spanning [lo, hi] that was observed at `times`.

    times: (K,) increasing frame indices with observations (any outside [lo, hi] are used only for filling);
    values: (K, D). Must include every observation in [f - r, f + r] for each requested f, and the nearest
    observation outside that window on each side when there is one. ends: "reflect" (official) or "linear" (see
    the module docstring). Returns (len(frames), D) float64.
    """
    if ends not in ENDS:
        raise InputError(f"smooth_at: smoothing ends must be one of {', '.join(ENDS)}, got {ends!r}")
    times = np.asarray(times, np.int64)
    values = np.asarray(values, np.float64).reshape(len(times), -1)
    if len(times) == 0:
        raise InputError("smooth_at: no observations to smooth")
    w = gaussian_weights(sigma)
    r = len(w) // 2
    frames = np.asarray(frames, np.int64).reshape(-1)
    offsets = np.arange(-r, r + 1)
    raw_idx = frames[:, None] + offsets[None, :]  # (F, 2r+1)
    if ends == "reflect":
        idx, weights = reflect_index(raw_idx, lo, hi), np.broadcast_to(w, raw_idx.shape)
    else:
        inside = (raw_idx >= lo) & (raw_idx <= hi)
        idx, weights = np.clip(raw_idx, lo, hi), np.where(inside, w[None, :], 0.0)
    filled = np.stack(
        [np.interp(idx.ravel().astype(np.float64), times.astype(np.float64), values[:, d]).reshape(idx.shape)
         for d in range(values.shape[1])],
        axis=2,
    )  # (F, 2r+1, D)
    if ends == "reflect":
        return np.einsum("fk,fkd->fd", weights, filled)
    # Weighted least-squares line a + b·k through the window, evaluated at k = 0 (the frame itself).
    k = offsets.astype(np.float64)[None, :]
    s0, s1, s2 = weights.sum(1), (weights * k).sum(1), (weights * k * k).sum(1)
    m0 = np.einsum("fk,fkd->fd", weights, filled)
    m1 = np.einsum("fk,fkd->fd", weights * k, filled)
    det = s0 * s2 - s1 * s1
    line = det > 1e-12 * np.maximum(s0 * s2, 1e-300)  # a single frame defines no line: use its value
    a_line = (s2[:, None] * m0 - s1[:, None] * m1) / np.where(line, det, 1.0)[:, None]
    out = np.where(line[:, None], a_line, m0 / s0[:, None])
    # Far from the ends the window is complete and symmetric: the line's value is the Gaussian mean itself.
    full = (frames - r >= lo) & (frames + r <= hi)
    out[full] = m0[full]
    return out
