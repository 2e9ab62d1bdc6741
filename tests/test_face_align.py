"""Alignment: the similarity fit against the official cv2 LMEDS estimator, the official warp (border colour,
interpolation) in exact mode, the region-of-interest warp, and the anti-aliasing flicker reduction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.face_scenes import astronaut, grace_hopper
from vs_keep.errors import InputError
from vs_keep.face import FFHQ_TEMPLATE_512, align_face, alignment_matrix, estimate_similarity, face_template
from vs_keep.face.align import BORDER_RGB
from vs_keep.geometry import invert_affine

# MTCNN landmarks of the two photos (measured once; the detection test checks the detector itself)
ASTRONAUT_LM = np.array([[204.0, 100.9], [247.1, 103.2], [225.7, 128.9], [201.3, 139.6], [245.7, 141.4]])
GRACE_LM = np.array([[220.5, 173.4], [308.5, 169.6], [269.1, 222.7], [234.0, 263.7], [306.9, 260.1]])


def _crop_displacement(m1: np.ndarray, m2: np.ndarray, size: int) -> float:
    """Largest distance (crop pixels) between where two frame->crop transforms put the crop's content."""
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    back = corners @ invert_affine(m1)[:, :2].T + invert_affine(m1)[:, 2]
    return float(np.linalg.norm(back @ m2[:, :2].T + m2[:, 2] - corners, axis=1).max())


def test_template_scales_with_face_size() -> None:
    assert np.allclose(face_template(512), FFHQ_TEMPLATE_512)
    assert np.allclose(face_template(128), FFHQ_TEMPLATE_512 / 4)
    with pytest.raises(InputError):
        face_template(0)


def test_lstsq_matches_official_lmeds_within_half_a_pixel() -> None:
    rng = np.random.default_rng(0)
    cases = [ASTRONAUT_LM, GRACE_LM]
    # plus random faces: the template under a random similarity (scale 0.1-2, any in-plane angle up to 40 deg),
    # with 1.5 % landmark noise (detector jitter, expression)
    for _ in range(200):
        s, a = rng.uniform(0.1, 2.0), np.deg2rad(rng.uniform(-40, 40))
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = FFHQ_TEMPLATE_512 @ rot.T + rng.uniform(0, 1500, 2)
        cases.append(pts + rng.normal(0, 0.015 * 126 * s, pts.shape))
    for size in (512, 128):
        errs, dropped = [], 0
        for lm in cases:
            official, inliers = cv2.estimateAffinePartial2D(lm, face_template(size), method=cv2.LMEDS)
            if inliers.sum() < 5:
                # LMEDS rejects a landmark whose error exceeds ~10x the median one; it then fits the other four
                # and the transform jumps. Least squares never switches, which is why it is our default.
                dropped += 1
                continue
            errs.append(_crop_displacement(alignment_matrix(lm, size), official, size))
        assert len(errs) > 0.7 * len(cases), dropped
        assert max(errs) < 0.5 * size / 512, (size, max(errs))
    # on the two photos LMEDS keeps every landmark, and the two estimates agree to 1e-3 px
    for lm in (ASTRONAUT_LM, GRACE_LM):
        official = cv2.estimateAffinePartial2D(lm, face_template(512), method=cv2.LMEDS)[0]
        assert _crop_displacement(alignment_matrix(lm, 512), official, 512) < 1e-3
    # the lmeds method is the official call itself
    official = cv2.estimateAffinePartial2D(GRACE_LM, face_template(512), method=cv2.LMEDS)[0]
    assert np.array_equal(alignment_matrix(GRACE_LM, 512, method="lmeds"), official)


def test_similarity_is_exact_on_noise_free_points() -> None:
    a = np.deg2rad(17)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 40.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -12.5]])
    src = np.random.default_rng(1).uniform(0, 300, (5, 2))
    assert np.allclose(estimate_similarity(src, src @ m[:, :2].T + m[:, 2]), m, atol=1e-9)
    with pytest.raises(InputError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), FFHQ_TEMPLATE_512)
    with pytest.raises(InputError, match="method"):
        estimate_similarity(src, src, method="ransac")


def test_exact_mode_is_the_official_warp() -> None:
    img = grace_hopper()
    m = alignment_matrix(GRACE_LM + [150.0, 0.0], 512)  # face pushed right: part of the crop is outside the frame
    ours = align_face(img, m, 512, exact=True)
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    official = cv2.warpAffine(bgr, m, (512, 512), borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))
    assert np.array_equal(np.rint(ours * 255).astype(np.uint8), official[:, :, ::-1])
    assert np.array_equal(np.rint(ours[0, -1] * 255), BORDER_RGB)  # outside the frame: the official grey


def test_roi_warp_equals_full_frame_warp_when_not_shrinking() -> None:
    img = astronaut()
    m = alignment_matrix(ASTRONAUT_LM, 512)  # face ~3x smaller than the crop: no prefilter
    full = cv2.warpAffine(img.astype(np.float32) / 255, m, (512, 512), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(v / 255 for v in BORDER_RGB))
    for antialias in (True, False):
        assert np.abs(align_face(img, m, 512, antialias=antialias) - full).max() < 1e-4
    # float input in [0, 1] gives the same crop as uint8 input
    assert np.abs(align_face(img.astype(np.float32) / 255, m, 512) - full).max() < 1e-4
    # a face entirely outside the frame gives a grey crop, not an error
    far = alignment_matrix(ASTRONAUT_LM + 5000, 64)
    assert np.allclose(align_face(img, far, 64) * 255, BORDER_RGB, atol=1e-3)


def _hp(c: np.ndarray) -> np.ndarray:
    return c - cv2.GaussianBlur(c, (0, 0), 1.0)


def test_antialiasing_reduces_flicker_of_a_face_twice_the_crop_size() -> None:
    """A static scene filmed with a camera moving 1/4 pixel per frame (box-filtered from a 4x render), aligned
    with landmarks that move with it: the ideal crop never changes, so all frame-to-frame change is artefact."""
    hi = cv2.resize(astronaut().astype(np.float32), (2048, 2048), interpolation=cv2.INTER_LANCZOS4)
    frames, lms = [], []
    for i in range(12):
        win = hi[i : i + 2016, i : i + 2016]
        frames.append(np.clip(cv2.resize(win, (504, 504), interpolation=cv2.INTER_AREA), 0, 255).round().astype(np.uint8))
        lms.append(ASTRONAUT_LM - 0.25 * i)
    eye = np.linalg.norm(ASTRONAUT_LM[1] - ASTRONAUT_LM[0])
    size = int(round(512 * eye / 2 / 126.0))  # the face is twice as large in the frame as in the crop
    assert 0.45 < np.sqrt(np.linalg.det(alignment_matrix(lms[0], size)[:, :2])) < 0.55

    def measure(antialias: bool) -> tuple[float, float]:
        crops = [align_face(f, alignment_matrix(lm, size), size, antialias=antialias) * 255 for f, lm in zip(frames, lms)]
        flicker = np.mean([np.abs(_hp(a) - _hp(b)).mean() for a, b in zip(crops[1:], crops[:-1])])
        detail = np.mean([np.abs(_hp(c)).mean() for c in crops])
        return float(flicker), float(detail)

    plain_flicker, plain_detail = measure(False)
    aa_flicker, aa_detail = measure(True)
    print(f"HF flicker bilinear {plain_flicker:.3f} -> antialiased {aa_flicker:.3f} "
          f"(x{plain_flicker / aa_flicker:.2f}); HF detail {plain_detail:.2f} -> {aa_detail:.2f}")
    assert aa_flicker < 0.5 * plain_flicker  # measured ~0.35x
    assert aa_detail > 0.6 * plain_detail  # not bought by blurring everything away (measured ~0.77x)
    assert aa_flicker / aa_detail < 0.6 * plain_flicker / plain_detail
