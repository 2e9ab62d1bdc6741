"""Paste-back: exact mode against a full-frame transcription of the official steps (bit for bit), several faces
without double blending, upscaled geometry, background passthrough."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.face_scenes import astronaut, grace_hopper
from vs_keep.errors import InputError
from vs_keep.face import FaceLayer, FacePaste, align_face, alignment_matrix, paste_faces, paste_layer
from vs_keep.geometry import paste_matrix

ASTRONAUT_LM = np.array([[204.0, 100.9], [247.1, 103.2], [225.7, 128.9], [201.3, 139.6], [245.7, 141.4]])


def official_paste(frame: np.ndarray, faces: list[np.ndarray], mats: list[np.ndarray], upscale: int) -> np.ndarray:
    """The official helper's non-parsing paste-back, step by step on full frames (KEEP-REFERENCE §4)."""
    h, w = frame.shape[:2]
    h_up, w_up = int(h * upscale), int(w * upscale)
    out = cv2.resize(frame, (w_up, h_up), interpolation=cv2.INTER_LINEAR)
    for face, m in zip(faces, mats):
        size = face.shape[0]
        inv = cv2.invertAffineTransform(m) * upscale
        if upscale > 1:
            inv[:, 2] += 0.5 * upscale
        inv_restored = cv2.warpAffine(face, inv, (w_up, h_up))
        inv_mask = cv2.warpAffine(np.ones((size, size), np.float32), inv, (w_up, h_up))
        eroded = cv2.erode(inv_mask, np.ones((int(2 * upscale), int(2 * upscale)), np.uint8))
        pasted = eroded[:, :, None] * inv_restored
        w_edge = int(np.sum(eroded) ** 0.5) // 20
        center = cv2.erode(eroded, np.ones((w_edge * 2, w_edge * 2), np.uint8))
        soft = cv2.GaussianBlur(center, (w_edge * 2 + 1, w_edge * 2 + 1), 0)[:, :, None]
        out = soft * pasted + (1 - soft) * out
    return out.astype(np.uint8)


def _faces(frame: np.ndarray, specs: list[tuple[np.ndarray, int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Restored-face stand-ins: real aligned crops of another photo (so content differs from the background)."""
    other = grace_hopper()
    lm_other = np.array([[220.5, 173.4], [308.5, 169.6], [269.1, 222.7], [234.0, 263.7], [306.9, 260.1]])
    faces, mats = [], []
    for lm, size in specs:
        crop = align_face(other, alignment_matrix(lm_other, size), size, exact=True)
        faces.append(np.rint(crop * 255).astype(np.uint8))
        mats.append(alignment_matrix(lm, size, method="lmeds"))
    return faces, mats


def _similar(lm: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = lm.mean(axis=0)
    return (lm - c) @ rot.T + c + np.array(shift)


@pytest.mark.parametrize("upscale", [1, 2])
def test_exact_paste_is_bit_identical_to_official(upscale: int) -> None:
    frame = astronaut()
    specs = [
        (ASTRONAUT_LM, 512),  # the photo's own face
        (_similar(ASTRONAUT_LM, 0.8, 25, (60, 40)), 512),  # rotated, overlapping the first
        (_similar(ASTRONAUT_LM, 1.2, -10, (-200, 300)), 256),  # cut by the left border
        (_similar(ASTRONAUT_LM, 0.25, 5, (150, 250)), 128),  # tiny face: w_edge = 0 (cv2's 3x3 default kernel)
    ]
    faces, mats = _faces(frame, specs)
    ours = paste_faces(frame, [FacePaste(f.astype(np.float32) / 255, m) for f, m in zip(faces, mats)],
                       upscale=upscale, exact=True)
    ref = official_paste(frame, faces, mats, upscale)
    assert ours.shape == ref.shape == (512 * upscale, 512 * upscale, 3)
    assert np.array_equal(ours, ref), np.abs(ours.astype(int) - ref.astype(int)).max()


def test_untouched_pixels_and_faceless_frames_are_exact() -> None:
    frame = astronaut()
    assert np.array_equal(paste_faces(frame, []), frame)
    faces, mats = _faces(frame, [(ASTRONAUT_LM, 512)])
    out = paste_faces(frame, [FacePaste(faces[0] / 255.0, mats[0])])
    alpha = paste_layer([FacePaste(faces[0] / 255.0, mats[0])], frame.shape[:2]).alpha
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])
    assert (alpha > 0).sum() > 5000 and alpha.max() == pytest.approx(1.0)
    up = paste_faces(frame, [], upscale=2)
    assert np.array_equal(up, cv2.resize(frame, (1024, 1024), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(InputError, match="upscale"):
        paste_faces(frame, [], upscale=1.5)


def test_overlapping_faces_blend_once_each_in_order() -> None:
    """Two constant-colour faces overlapping: every pixel is the sequential composite bg -> face 1 -> face 2 with
    each face's own soft mask; no seams, no face blended twice."""
    frame = astronaut().astype(np.float32) / 255
    m1 = alignment_matrix(ASTRONAUT_LM, 128)
    m2 = alignment_matrix(_similar(ASTRONAUT_LM, 1.1, 30, (35, 20)), 128)
    red = FacePaste(np.broadcast_to(np.float32([1, 0, 0]), (128, 128, 3)).copy(), m1)
    blue = FacePaste(np.broadcast_to(np.float32([0, 0, 1]), (128, 128, 3)).copy(), m2)
    both, alpha = paste_faces(frame, [red, blue]), paste_layer([red, blue], frame.shape[:2]).alpha
    a1, a2 = (paste_layer([f], frame.shape[:2]).alpha for f in (red, blue))
    assert ((a1 > 0.5) & (a2 > 0.5)).sum() > 500  # they do overlap
    expect = (frame * (1 - a1[..., None]) + np.float32([1, 0, 0]) * a1[..., None]) * (1 - a2[..., None]) + np.float32([0, 0, 1]) * a2[..., None]
    assert np.abs(both - expect).max() < 1 / 255  # eroded-edge factor aside (< 1 only where the masks are ~0)
    assert np.allclose(alpha, 1 - (1 - a1) * (1 - a2), atol=1e-6)


def test_upscaled_paste_lands_on_the_bilinear_background() -> None:
    """An identity face pasted into a 2x output must line up with cv2's bilinear 2x background: measured by phase
    correlation, our geometry is within 0.05 px; the official +u/2 offset is half an output pixel off."""
    frame = astronaut()
    m = alignment_matrix(ASTRONAUT_LM, 512)
    crop = align_face(frame, m, 512)
    bg = cv2.resize(frame, (1024, 1024), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    shifts = {}
    for exact in (False, True):
        out = paste_faces(frame, [FacePaste(crop, m)], upscale=2, exact=exact).astype(np.float32)
        a, b = out[180:340, 380:520].mean(axis=2), bg[180:340, 380:520].mean(axis=2)
        (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float64), b.astype(np.float64))
        shifts[exact] = float(np.hypot(dx, dy))
    assert shifts[False] < 0.05, shifts
    assert 0.4 < shifts[True] < 0.9, shifts  # (0.5, 0.5) output px
    # the matrices differ by exactly that translation
    d = paste_matrix(m, 2, exact=True) - paste_matrix(m, 2, exact=False)
    assert np.allclose(d[:, :2], 0) and np.allclose(d[:, 2], 0.5)


def test_antialiased_paste_of_a_detailed_face_into_a_small_moving_face() -> None:
    """A 512-px face with pixel-level detail pasted as a 90-px face moving by 1/4 px per frame, compared with an
    ideal camera (box-filtered 8x supersampled render): the prefilter cuts the frame-to-frame change of the error
    (aliasing shimmer), and the error itself."""
    tex = astronaut().astype(np.float32) / 255
    h, w, s = 240, 320, 90 / 512
    bg = np.full((h, w, 3), 0.5, np.float32)

    def ideal(tx: float, ty: float, k: int = 8) -> np.ndarray:
        inv = np.array([[s * k, 0, tx * k + (k - 1) / 2], [0, s * k, ty * k + (k - 1) / 2]])
        hi = cv2.warpAffine(tex, inv, (w * k, h * k), flags=cv2.INTER_LINEAR, borderValue=(0.5, 0.5, 0.5))
        return cv2.resize(hi, (w, h), interpolation=cv2.INTER_AREA)

    win = (slice(85, 145), slice(115, 175))
    errors: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for i in range(10):
        tx, ty = 100.3 + 0.25 * i, 70.6 + 0.125 * i
        m = cv2.invertAffineTransform(np.array([[s, 0, tx], [0, s, ty]]))
        ref = ideal(tx, ty)[win]
        for aa in (False, True):
            errors[aa].append(paste_faces(bg, [FacePaste(tex, m)], antialias=aa)[win] - ref)
    flicker = {aa: 255 * np.mean([np.abs(a - b).mean() for a, b in zip(e[1:], e[:-1])]) for aa, e in errors.items()}
    error = {aa: 255 * np.mean([np.abs(x).mean() for x in e]) for aa, e in errors.items()}
    print(f"paste shimmer {flicker[False]:.2f} -> {flicker[True]:.2f} LSB/frame; error {error[False]:.2f} -> {error[True]:.2f} LSB")
    assert flicker[True] < 0.5 * flicker[False]  # measured ~0.3x
    assert error[True] < error[False]


def _over(layer: FaceLayer, background: np.ndarray) -> np.ndarray:
    """The layer composited onto a float (H·u, W·u, 3) background; pixels with alpha 0 come back unchanged."""
    out = np.array(background, np.float32, copy=True)
    if layer.box is not None:
        x0, y0, x1, y1 = layer.box
        a, win = layer.alpha[y0:y1, x0:x1, None], out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = np.where(a > 0, a * layer.color[y0:y1, x0:x1] + (1.0 - a) * win, win)
    return out


@pytest.mark.parametrize("upscale", [1, 2])
def test_layer_plus_alpha_reproduces_paste_faces(upscale: int) -> None:
    """paste_layer gives colour + alpha with alpha·color + (1 − alpha)·background = paste_faces(frame): four faces
    (overlapping, cut by the border, tiny), a parse mask on one, upscaled background. fp32 blending order differs,
    so float frames agree to 1e-5 and uint8 frames to one code (rounding of a value near .5)."""
    frame = astronaut()
    specs = [
        (ASTRONAUT_LM, 512),
        (_similar(ASTRONAUT_LM, 0.8, 25, (60, 40)), 512),
        (_similar(ASTRONAUT_LM, 1.2, -10, (-200, 300)), 256),
        (_similar(ASTRONAUT_LM, 0.25, 5, (150, 250)), 128),
    ]
    faces, mats = _faces(frame, specs)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    parse = np.clip(1.5 - np.hypot(xx - 256, yy - 280) / 160, 0, 1).astype(np.float32)  # a soft oval
    pastes = [FacePaste(f.astype(np.float32) / 255, m, parse if i == 1 else None) for i, (f, m) in enumerate(zip(faces, mats))]
    layer = paste_layer(pastes, frame.shape[:2], upscale=upscale)
    size = (512 * upscale, 512 * upscale)
    assert layer.color.shape == (*size, 3) and layer.alpha.shape == size and layer.box is not None
    fl = frame.astype(np.float32) / 255
    want = paste_faces(fl, pastes, upscale=upscale)
    bg = cv2.resize(fl, size[::-1], interpolation=cv2.INTER_LINEAR) if upscale > 1 else fl
    got = _over(layer, bg)
    assert np.abs(got - want).max() < 1e-5
    assert np.array_equal(got[layer.alpha == 0], bg[layer.alpha == 0]) and (layer.alpha == 0).any()
    assert not layer.color[layer.alpha == 0].any()
    want8 = paste_faces(frame, pastes, upscale=upscale)
    bg8 = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR) if upscale > 1 else frame
    got8 = np.clip(np.rint(_over(layer, bg8.astype(np.float32) / 255) * 255), 0, 255).astype(np.uint8)
    assert np.abs(got8.astype(int) - want8.astype(int)).max() <= 1
    empty = paste_layer([], frame.shape[:2])
    assert empty.box is None and not empty.alpha.any() and np.array_equal(_over(empty, fl), fl)
