"""The face engine's linear pass (`restore_stream`, what the CLI runs) on a small video made from two real photos
(real MTCNN, identity restorer): tracks inside a chunk, passthrough of untouched pixels and faceless frames,
geometry of the identity round trip, a face cut by the border, bounded read-ahead, official chunking, float
frames, upscale and the face-selection modes."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from data.face_scenes import face_center, two_face_scene
from engine_run import linear_pass, paste_alpha
from vs_keep.errors import InputError
from vs_keep.face import create_detector, identity_restorer
from vs_keep.face.restorers import SharedRestorerFactory
from vs_keep.face.types import Detection
from vs_keep.face_engine import FaceEngine
from vs_keep.stream import restore_stream

EMPTY_HEAD, N, CHUNK, MAX_GAP, SIZE = 3, 36, 20, 10, 128


class MemoDetector:
    """The real MTCNN, memoised on frame bytes so the several engine runs below detect each frame once."""

    def __init__(self) -> None:
        self.inner = create_detector("mtcnn")
        self.cache: dict[bytes, list[Detection]] = {}

    def detect(self, image: np.ndarray) -> list[Detection]:
        key = hashlib.sha1(image.tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]


class RecordingFactory:
    """Identity restorer that records (track index, clip length) of every call."""

    face_size = SIZE

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, track_id: int):
        def restore(chunk: torch.Tensor) -> torch.Tensor:
            assert chunk.shape[1:] == (3, SIZE, SIZE) and chunk.dtype == torch.float32
            assert -1.0 <= float(chunk.min()) and float(chunk.max()) <= 1.0
            self.calls.append((track_id, len(chunk)))
            return chunk.clone()

        return restore


@pytest.fixture(scope="module")
def scene():
    torch.set_num_threads(2)
    return two_face_scene(n=N, empty_head=EMPTY_HEAD)


@pytest.fixture(scope="module")
def detector() -> MemoDetector:
    return MemoDetector()


@pytest.fixture(scope="module")
def streamed(scene, detector):
    """The linear pass, recording how far the reader ran ahead of the chunk being emitted."""
    factory = RecordingFactory()
    engine = FaceEngine(restorer_factory=factory, detector=detector, chunk=CHUNK, max_gap=MAX_GAP)
    consumed = 0

    def source():
        nonlocal consumed
        for frame in scene.frames:
            consumed += 1
            yield frame

    results, ahead = [], 0
    for r in restore_stream(engine, source(), len(scene.frames)):
        ahead = max(ahead, consumed - r.span.start)
        results.append(r)
    alphas = [paste_alpha(f.shape, r.faces, SIZE) for r, f in zip(results, scene.frames)]
    return results, factory.calls, ahead, alphas


def _who(scene, frame: int, landmarks: np.ndarray) -> str | None:
    """Which pasted face a track's landmarks belong to (nearest centre, within 25 px)."""
    best, name = 25.0, None
    for n, places in scene.placements.items():
        if places[frame] is not None:
            d = float(np.linalg.norm(landmarks.mean(axis=0) - face_center(n, places[frame])))
            if d < best:
                best, name = d, n
    return name


def test_frames_come_out_in_order_with_bounded_read_ahead(scene, streamed) -> None:
    results, _, ahead, _ = streamed
    assert len(results) == len(scene.frames)
    assert all(r.image.shape == scene.frames[0].shape and r.image.dtype == np.uint8 for r in results)
    assert all(r.span.start <= n < r.span.stop for n, r in enumerate(results))
    # frames held = read - released (everything before the chunk start): chunk + smoothing radius + max_gap + 1
    assert ahead <= CHUNK + 20 + MAX_GAP + 2, ahead


def test_one_track_per_face_inside_each_chunk(scene, streamed) -> None:
    results, _, _, alphas = streamed
    for start in range(0, N + EMPTY_HEAD, CHUNK):
        ids: dict[str, set[int]] = {"astronaut": set(), "grace": set()}
        for n in range(start, min(start + CHUNK, len(results))):
            for face in results[n].faces:
                name = _who(scene, n, face.landmarks)
                assert name is not None, (n, face)
                ids[name].add(face.track)
        assert len(ids["astronaut"]) == 1 and len(ids["grace"]) <= 1 and not ids["astronaut"] & ids["grace"], ids
    astronaut = [n for n, r in enumerate(results) if any(_who(scene, n, f.landmarks) == "astronaut" for f in r.faces)]
    assert astronaut == list(range(EMPTY_HEAD, EMPTY_HEAD + N))  # restored in every frame with her face
    # the face cut by the right border (frames 6-9) is restored and pasted right up to the edge
    for n in range(EMPTY_HEAD + 6, EMPTY_HEAD + 10):
        assert any(_who(scene, n, f.landmarks) == "grace" for f in results[n].faces), n
        assert alphas[n][75:135, -1].max() > 0.9, (n, alphas[n][75:135, -1].max())


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sub-pixel translation d with a(x) ~ b(x + d): one least-squares gradient step on lightly blurred images
    (accurate to ~0.01 px for shifts well under a pixel)."""
    a, b = cv2.GaussianBlur(a, (0, 0), 1.5)[3:-3, 3:-3], cv2.GaussianBlur(b, (0, 0), 1.5)[3:-3, 3:-3]
    gy, gx = np.gradient(b)
    return np.linalg.lstsq(np.stack([gx.ravel(), gy.ravel()], 1), (a - b).ravel(), rcond=None)[0]


def test_identity_restorer_leaves_the_video_unchanged_outside_the_faces(scene, streamed) -> None:
    results, _, _, alphas = streamed
    interior_err, shifts = [], []
    for n, (r, frame, alpha) in enumerate(zip(results, scene.frames, alphas)):
        if n < EMPTY_HEAD:  # frames without faces pass through untouched
            assert not r.faces and np.array_equal(r.image, frame)
        outside = alpha == 0
        assert np.array_equal(r.image[outside], frame[outside])  # untouched pixels are bit-exact
        inside = alpha >= 0.999
        if inside.any():
            interior_err.append(np.abs(r.image[inside].astype(int) - frame[inside].astype(int)).mean())
        count, labels, stats, _ = cv2.connectedComponentsWithStats(inside.astype(np.uint8))
        for x, y, w, h, area in stats[1:]:
            if area < 1500:  # a sliver of a face at the border: too small to measure a shift
                continue
            win = (slice(y, y + h), slice(x, x + w))
            a = r.image[win].mean(axis=2).astype(np.float64)
            b = frame[win].mean(axis=2).astype(np.float64)
            shifts.append(float(np.hypot(*_shift(a, b))))
    # Inside the faces the identity round trip (warp to the crop, low-pass, warp back) only softens: no shift.
    assert len(shifts) > N and max(shifts) < 0.05, max(shifts)
    assert np.mean(interior_err) < 8.0


def test_official_chunking(scene, streamed) -> None:
    """Every restorer call is one track's clip inside one chunk [20k, 20k+20), frames in order."""
    results, calls, _, _ = streamed
    expected = []
    for start in range(0, len(scene.frames), CHUNK):
        per_track: dict[int, int] = {}
        for r in results[start : start + CHUNK]:
            for f in r.faces:
                per_track[f.track] = per_track.get(f.track, 0) + 1
        expected += sorted(per_track.items())
    assert sorted(calls) == sorted(expected) and all(t <= CHUNK for _, t in calls)
    assert all(r.span.start % CHUNK == 0 and r.span.stop == min(r.span.start + CHUNK, len(results)) for r in results)


def test_float_frames_and_upscale(scene, detector) -> None:
    frames = scene.frames[EMPTY_HEAD : EMPTY_HEAD + 6]
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    floats = linear_pass([f.astype(np.float32) / 255 for f in frames], factory, detector, chunk=CHUNK, max_gap=MAX_GAP)
    ints = linear_pass(frames, factory, detector, chunk=CHUNK, max_gap=MAX_GAP)
    assert all(f.image.dtype == np.float32 for f in floats)
    assert max(np.abs(f.image * 255 - i.image).max() for f, i in zip(floats, ints)) <= 0.5 + 1e-3
    up = linear_pass(frames, factory, detector, chunk=CHUNK, max_gap=MAX_GAP, upscale=2)
    assert up[0].image.shape == (480, 640, 3)
    alpha = paste_alpha(frames[0].shape, up[0].faces, SIZE, upscale=2)
    bg = cv2.resize(frames[0], (640, 480), interpolation=cv2.INTER_LINEAR)
    assert (alpha > 0).any() and np.array_equal(up[0].image[alpha == 0], bg[alpha == 0])


def test_input_checks(detector) -> None:
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    with pytest.raises(InputError, match="faces"):
        FaceEngine(restorer_factory=factory, detector=detector, faces="biggest")
    bad = SharedRestorerFactory(lambda x: x[:, :1], SIZE)
    with pytest.raises(InputError, match="restorer returned"):
        linear_pass(two_face_scene(n=2).frames, bad, detector)
    assert linear_pass([], factory, detector) == []


def test_faces_largest_and_center(scene, detector) -> None:
    frames = scene.frames[EMPTY_HEAD : EMPTY_HEAD + 6]  # both faces visible; grace moves right, off-centre
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    mid = np.array([160.0, 120.0])
    central = [min(("astronaut", "grace"), key=lambda n: np.linalg.norm(face_center(n, scene.placements[n][f]) - mid))
               for f in range(EMPTY_HEAD, EMPTY_HEAD + 6)]
    assert len(set(central)) == 2  # the most central face changes during the clip
    for mode, expect in (("largest", ["grace"] * 6), ("center", central)):
        out = linear_pass(frames, factory, detector, faces=mode)
        assert all(len(r.faces) == 1 for r in out), mode
        assert [_who(scene, n + EMPTY_HEAD, r.faces[0].landmarks) for n, r in enumerate(out)] == expect, mode
