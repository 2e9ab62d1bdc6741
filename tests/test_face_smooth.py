"""Streaming / windowed landmark smoothing against the official whole-sequence computation
(np.interp over missed frames, then scipy gaussian_filter1d, sigma 5, reflect, truncate 4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from vs_keep.errors import InputError
from vs_keep.face.smooth import StreamingSmoother, gaussian_radius, gaussian_weights, reflect_index, smooth_at


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


def test_streaming_equals_whole_sequence() -> None:
    rng = np.random.default_rng(0)
    worst, buffered = 0.0, 0
    for _ in range(150):
        n = int(rng.integers(1, 130))
        raw = random_track(rng, n)
        sm = StreamingSmoother()
        got: dict[int, np.ndarray] = {}
        for row in raw:
            for i, v in sm.push(None if np.isnan(row[0]) else row):
                assert i not in got
                got[i] = v
            buffered = max(buffered, len(sm._obs))
        for i, v in sm.finish():
            got[i] = v
        assert sorted(got) == list(range(n))
        worst = max(worst, float(np.abs(np.stack([got[i] for i in range(n)]) - official(raw)).max()))
    print(f"streaming vs scipy max |diff| = {worst:.2e}; max observations held = {buffered}")
    assert worst < 1e-6
    assert buffered <= 2 * gaussian_radius() + 2  # bounded, whatever the length


def test_streaming_emits_with_bounded_delay() -> None:
    sm = StreamingSmoother()
    out = []
    for i in range(100):
        out += sm.push(np.array([float(i), 2.0 * i]))
        assert len(out) >= i + 1 - 20  # frame n is final once frame n + 20 is in
    assert len(sm.finish()) == 20
    with pytest.raises(InputError, match="no frame had an observation"):
        empty = StreamingSmoother()
        empty.push(None)
        empty.finish()


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
