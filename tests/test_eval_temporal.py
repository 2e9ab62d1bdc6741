"""Warping error on constructed clips: zero when static, grows with per-frame noise, drops with temporal smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from eval_clips import panning_frames
from scipy.ndimage import gaussian_filter1d

from vs_keep.evaluation.temporal import WarpingError, occlusion_mask

N = 8


def _ewarp(frames: list[np.ndarray]) -> float:
    metric = WarpingError()
    for f in frames:
        metric.update(f)
    assert len(metric.values) == len(frames) - 1
    return float(np.mean(metric.values))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def moving() -> list[np.ndarray]:
    return panning_frames(N, 160, image="coffee", origin=(200, 100))


def test_static_clip_has_zero_error() -> None:
    frame = panning_frames(1, 160)[0]
    assert _ewarp([frame] * 5) == pytest.approx(0.0, abs=1e-9)


def test_moving_clip_is_compensated(moving) -> None:
    # Real motion (2 px/frame pan) is followed by the flow: error stays far below unregistered differences.
    raw = np.mean([np.mean(((a / 255.0) - (b / 255.0)) ** 2) * 3000 for a, b in zip(moving, moving[1:])])
    assert _ewarp(moving) < 0.2 * raw


def test_error_grows_with_noise(moving) -> None:
    rng = np.random.default_rng(0)
    errors = [_ewarp([_u8(f + rng.normal(0, s, f.shape)) for f in moving]) for s in (0, 3, 8)]
    assert errors[0] < errors[1] < errors[2]
    # Independent noise of std s in both frames: about 2 s^2 per channel on a [0, 255] scale.
    assert errors[1] == pytest.approx(2 * 3 * 3**2 / 255**2 * 1000, rel=0.35)


def test_smoothed_flicker_beats_flicker(moving) -> None:
    rng = np.random.default_rng(1)
    gains = 1.0 + 0.06 * rng.standard_normal(N)
    flicker = [_u8(f * g) for f, g in zip(moving, gains)]
    smoothed = list(_u8(gaussian_filter1d(np.stack(flicker).astype(np.float32), sigma=1.5, axis=0)))
    e_flicker, e_smooth = _ewarp(flicker), _ewarp(smoothed)
    assert e_smooth < 0.5 * e_flicker


def test_occlusion_mask_flags_inconsistent_flow() -> None:
    h, w = 20, 30
    fw = np.zeros((h, w, 2), np.float32)
    fw[..., 0] = 2.0
    bw = -fw.copy()
    mask = occlusion_mask(fw, bw)
    assert mask[:, : w - 3].all() and not mask[:, w - 2 :].any()  # pixels pushed outside the frame are invalid
    bw[5:10, 5:10] = 6.0  # backward flow disagrees here
    mask2 = occlusion_mask(fw, bw)
    assert not mask2[5:10, 3:8].any() and mask2[15:, :20].all()
