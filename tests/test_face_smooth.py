"""Windowed landmark smoothing against the official whole-sequence computation
(np.interp over missed frames, then scipy gaussian_filter1d, sigma 5, reflect, truncate 4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from vs_keep.errors import InputError
from vs_keep.face.smooth import gaussian_radius, gaussian_weights, reflect_index, smooth_at


def official(raw: np.ndarray) -> np.ndarray:
    """The official script's smoothing of a (T, D) array with NaN rows for missed frames."""
    filled = raw.copy()
    t = np.arange(len(raw))
    for d in range(raw.shape[1]):
        ok = ~np.isnan(raw[:, d])
        filled[:, d] = np.interp(t, t[ok], raw[ok, d])
    return gaussian_filter1d(filled, sigma=5, axis=0)


def random_track(rng: np.random.Generator, n: int) -> np.ndarray:
    x = 200 + np.cumsum(rng.normal(0, 2, (n, 10)), axis=0)
    miss = rng.random(n) < rng.uniform(0, 0.6)
    kind = rng.integers(0, 4)
    if kind == 1:  # missing head: interp clamps to the first detection
        miss[: rng.integers(1, n + 1)] = True
    elif kind == 2:  # missing tail
        miss[rng.integers(0, n) :] = True
    elif kind == 3:  # a long gap in the middle
        a = rng.integers(0, n)
        miss[a : a + rng.integers(1, 60)] = True
    if miss.all():
        miss[rng.integers(0, n)] = False
    x[miss] = np.nan
    return x


def test_kernel_matches_scipy() -> None:
    assert gaussian_radius(5.0) == 20
    impulse = np.zeros(81)
    impulse[40] = 1
    assert np.allclose(gaussian_filter1d(impulse, 5)[20:61], gaussian_weights(5.0)[::-1], atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 41, 42])
def test_reflect_index_matches_scipy_for_any_length(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 1))
    t = np.arange(n)
    ours = smooth_at(t, t, x, 0, n - 1)
    assert np.abs(ours[:, 0] - gaussian_filter1d(x[:, 0], 5)).max() < 1e-12
    # reflect is symmetric about the edges, period 2n
    assert list(reflect_index(np.array([-1, -2, n, n + 1]), 0, n - 1)) == [0, min(1, n - 1), n - 1, max(n - 2, 0)]


def test_window_function_needs_only_nearby_detections() -> None:
    """smooth_at(n) from the detections in [n-20, n+20] plus the nearest one outside on each side equals the
    whole-sequence result: what a random-access filter computes for frame n."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(30, 160))
        raw = random_track(rng, n)
        ref = official(raw)
        obs = np.nonzero(~np.isnan(raw[:, 0]))[0]
        for f in rng.integers(0, n, 8):
            inside = obs[(obs >= f - 20) & (obs <= f + 20)]
            before, after = obs[obs < f - 20][-1:], obs[obs > f + 20][:1]
            times = np.concatenate([before, inside, after])
            got = smooth_at([f], times, raw[times], 0, n - 1)
            assert np.abs(got[0] - ref[f]).max() < 1e-9


def test_linear_ends_equal_official_inside_and_follow_motion_at_the_ends() -> None:
    rng = np.random.default_rng(7)
    n = 90
    t = np.arange(n, dtype=np.float64)
    # a face entering at 9.5 px/frame, with 1 px detector jitter and some missed frames
    truth = np.stack([30 + 9.5 * t, 80 + 0.5 * t], axis=1)
    raw = truth + rng.normal(0, 1.0, truth.shape)
    raw[[5, 6, 40, 41, 42, 70]] = np.nan
    ref = official(raw)
    obs = np.nonzero(~np.isnan(raw[:, 0]))[0]
    lin = smooth_at(t.astype(int), obs, raw[obs], 0, n - 1, ends="linear")
    refl = smooth_at(t.astype(int), obs, raw[obs], 0, n - 1, ends="reflect")
    assert np.abs(refl - ref).max() < 1e-9
    interior = slice(20, n - 20)
    assert np.abs(lin[interior] - ref[interior]).max() < 1e-9  # identical where the window is complete
    # at the ends, reflection drags the position towards the middle of the window; the local line does not
    bias_reflect = np.abs(refl[0] - truth[0]).max()
    bias_linear = np.abs(lin[:3] - truth[:3]).max()
    print(f"first frames: reflect off by {bias_reflect:.1f} px, linear by {bias_linear:.1f} px")
    assert bias_reflect > 30 and bias_linear < 2.0
    # still smoothing: jitter at the ends is below the raw detector jitter on average
    ends = np.r_[0:20, n - 20 : n]
    ok = ~np.isnan(raw[ends, 0])
    assert np.abs(lin[ends][ok] - truth[ends][ok]).mean() < np.abs(raw[ends][ok] - truth[ends][ok]).mean()
    # one-frame and two-frame sequences
    assert np.allclose(smooth_at([3], [3], [[5.0, 6.0]], 3, 3, ends="linear"), [[5.0, 6.0]])
    assert np.allclose(smooth_at([3, 4], [3, 4], [[0.0], [1.0]], 3, 4, ends="linear"), [[0.0], [1.0]])
    with pytest.raises(InputError, match="ends"):
        smooth_at([0], [0], [[0.0]], 0, 0, ends="wrap")
