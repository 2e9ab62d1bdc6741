"""The streaming FacePipeline on a small video made from two real photos (real MTCNN): track ids, passthrough of
untouched pixels and faceless frames, geometry of the identity round trip, a face cut by the border, bounded
buffering, official chunking, and equality with the random-access (window) computation."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from data.face_scenes import face_center, two_face_scene
from vs_keep.errors import InputError
from vs_keep.face import (
    FacePaste,
    FacePipeline,
    chunk_bounds,
    chunk_window,
    create_detector,
    detect_faces,
    identity_restorer,
    paste_faces,
    plan_chunk,
    restore_segment,
)
from vs_keep.face.restorers import SharedRestorerFactory
from vs_keep.face.types import Detection

EMPTY_HEAD, N, CHUNK, MAX_GAP, SIZE = 3, 36, 20, 10, 128


class MemoDetector:
    """The real MTCNN, memoised on frame bytes so the several pipeline runs below detect each frame once."""

    def __init__(self) -> None:
        self.inner = create_detector("mtcnn")
        self.cache: dict[bytes, list[Detection]] = {}

    def detect(self, image: np.ndarray) -> list[Detection]:
        key = hashlib.sha1(image.tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]


class RecordingFactory:
    """Identity restorer that records (track id, chunk length) of every call."""

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
    factory = RecordingFactory()
    pipe = FacePipeline(restorer_factory=factory, detector=detector, chunk=CHUNK, max_gap=MAX_GAP, with_alpha=True)
    results, held = [], 0
    for frame in scene.frames:
        results += pipe.push(frame)
        held = max(held, pipe.buffered_frames)
    results += pipe.flush()
    return results, factory.calls, held


def _who(scene, frame: int, landmarks: np.ndarray) -> str | None:
    """Which pasted face a track's landmarks belong to (nearest centre, within 25 px)."""
    best, name = 25.0, None
    for n, places in scene.placements.items():
        if places[frame] is not None:
            d = float(np.linalg.norm(landmarks.mean(axis=0) - face_center(n, places[frame])))
            if d < best:
                best, name = d, n
    return name


def test_frames_come_out_in_order_with_bounded_buffer(scene, streamed) -> None:
    results, _, held = streamed
    assert [r.index for r in results] == list(range(len(scene.frames)))
    assert all(r.image.shape == scene.frames[0].shape and r.image.dtype == np.uint8 for r in results)
    # chunk + smoothing radius + max_gap + 1 (+1 for the frame being pushed)
    assert held <= CHUNK + 20 + MAX_GAP + 2, held


def test_track_ids_are_stable(scene, streamed) -> None:
    results, _, _ = streamed
    ids: dict[str, list[tuple[int, int]]] = {"astronaut": [], "grace": []}
    for r in results:
        for face in r.faces:
            name = _who(scene, r.index, face.landmarks)
            assert name is not None, (r.index, face)
            ids[name].append((r.index, face.track))
    astro = {t for _, t in ids["astronaut"]}
    assert len(astro) == 1 and len(ids["astronaut"]) == N  # one id, in every frame with her face
    first = {t for f, t in ids["grace"] if f < EMPTY_HEAD + 17}
    second = {t for f, t in ids["grace"] if f >= EMPTY_HEAD + 17}
    # stable while visible; she is gone longer than max_gap, so she comes back as a new track
    assert len(first) == 1 and len(second) == 1 and first != second and not (first | second) & astro
    # the face cut by the right border (frames 6-9) is restored and pasted right up to the edge
    border = [r for r in results if EMPTY_HEAD + 6 <= r.index <= EMPTY_HEAD + 9]
    for r in border:
        assert any(_who(scene, r.index, f.landmarks) == "grace" for f in r.faces), r.index
        rows = slice(75, 135)
        assert r.alpha[rows, -1].max() > 0.9, (r.index, r.alpha[rows, -1].max())


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sub-pixel translation d with a(x) ~ b(x + d): one least-squares gradient step on lightly blurred images
    (accurate to ~0.01 px for shifts well under a pixel)."""
    a, b = cv2.GaussianBlur(a, (0, 0), 1.5)[3:-3, 3:-3], cv2.GaussianBlur(b, (0, 0), 1.5)[3:-3, 3:-3]
    gy, gx = np.gradient(b)
    return np.linalg.lstsq(np.stack([gx.ravel(), gy.ravel()], 1), (a - b).ravel(), rcond=None)[0]


def test_identity_restorer_leaves_the_video_unchanged_outside_the_faces(scene, streamed) -> None:
    results, _, _ = streamed
    interior_err, shifts = [], []
    for r, frame in zip(results, scene.frames):
        if r.index < EMPTY_HEAD:  # frames without faces pass through untouched
            assert not r.faces and np.array_equal(r.image, frame)
        outside = r.alpha == 0
        assert np.array_equal(r.image[outside], frame[outside])  # untouched pixels are bit-exact
        inside = r.alpha >= 0.999
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
    print(f"identity round trip: mean |error| inside faces {np.mean(interior_err):.2f} LSB, "
          f"max shift {max(shifts):.3f} px")
    assert len(shifts) > N and max(shifts) < 0.05
    assert np.mean(interior_err) < 8.0


def test_official_chunking(scene, streamed) -> None:
    """Every restorer call is one track inside one chunk [20k, 20k+20), frames in order, state reset per call."""
    results, calls, _ = streamed
    expected = []
    for start in range(0, len(scene.frames), CHUNK):
        per_track: dict[int, int] = {}
        for r in results[start : start + CHUNK]:
            for f in r.faces:
                per_track[f.track] = per_track.get(f.track, 0) + 1
        expected += sorted(per_track.items())
    got = []
    for start in range(0, len(scene.frames), CHUNK):
        n = sum(1 for r in results[start : start + CHUNK] for _ in r.faces)
        chunk_calls = []
        while n > 0:
            chunk_calls.append(calls[len(got) + len(chunk_calls)])
            n -= chunk_calls[-1][1]
        got += sorted(chunk_calls)
    assert got == expected and all(t <= CHUNK for _, t in calls)


def test_random_access_window_gives_the_same_frames(scene, streamed, detector) -> None:
    """What a VapourSynth filter does for frame n: detect only the frames of chunk_window around n's chunk, plan
    that chunk, restore its segments, paste frame n. It matches the streaming output bit for bit."""
    results, _, _ = streamed
    length = len(scene.frames)
    start, stop = chunk_bounds(25, CHUNK)
    lo, hi = chunk_window(start, stop, max_gap=MAX_GAP)
    hi = min(hi, length)
    dets = {f: detect_faces(detector, scene.frames[f], min_face_size=20.0) for f in range(lo, hi)}
    segments = plan_chunk(dets, start, stop, length=length)
    pending: dict[int, list[FacePaste]] = {}
    for seg in segments:
        faces, mats = restore_segment(scene.frames.__getitem__, seg, identity_restorer, face_size=SIZE)
        for k, f in enumerate(seg.frames):
            pending.setdefault(int(f), []).append(FacePaste(faces[k], mats[k]))
    for n in range(start, min(stop, length)):
        assert np.array_equal(paste_faces(scene.frames[n], pending.get(n, [])), results[n].image), n


def test_float_frames_and_upscale(scene, streamed, detector) -> None:
    results, _, _ = streamed
    frames = scene.frames[EMPTY_HEAD : EMPTY_HEAD + 6]
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    pipe = FacePipeline(restorer_factory=factory, detector=detector, chunk=CHUNK, max_gap=MAX_GAP)
    floats = list(pipe([f.astype(np.float32) / 255 for f in frames]))
    ints = list(pipe(frames))
    assert all(f.dtype == np.float32 for f in floats)
    assert max(np.abs(f * 255 - i).max() for f, i in zip(floats, ints)) <= 0.5 + 1e-3
    up = FacePipeline(restorer_factory=factory, detector=detector, chunk=CHUNK, max_gap=MAX_GAP, upscale=2, with_alpha=True)
    out = list(up.run(frames))
    assert out[0].image.shape == (480, 640, 3)
    bg = cv2.resize(frames[0], (640, 480), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[0].image[out[0].alpha == 0], bg[out[0].alpha == 0])


def test_input_checks(detector) -> None:
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    with pytest.raises(InputError, match="faces"):
        FacePipeline(restorer_factory=factory, detector=detector, faces="biggest")
    pipe = FacePipeline(restorer_factory=factory, detector=detector)
    with pytest.raises(InputError, match="HxWx3"):
        pipe.push(np.zeros((10, 10), np.uint8))
    pipe.push(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(InputError, match="earlier frames"):
        pipe.push(np.zeros((40, 50, 3), np.uint8))
    bad = FacePipeline(restorer_factory=SharedRestorerFactory(lambda x: x[:, :1], SIZE), detector=detector)
    with pytest.raises(InputError, match="restorer returned"):
        list(bad(two_face_scene(n=2).frames))
    assert list(FacePipeline(restorer_factory=factory, detector=detector)([])) == []


def test_faces_largest_and_center(scene, detector) -> None:
    frames = scene.frames[EMPTY_HEAD : EMPTY_HEAD + 6]  # both faces visible; grace moves right, off-centre
    factory = SharedRestorerFactory(identity_restorer, SIZE)
    mid = np.array([160.0, 120.0])
    central = [min(("astronaut", "grace"), key=lambda n: np.linalg.norm(face_center(n, scene.placements[n][f]) - mid))
               for f in range(EMPTY_HEAD, EMPTY_HEAD + 6)]
    assert len(set(central)) == 2  # the most central face changes during the clip
    for mode, expect in (("largest", ["grace"] * 6), ("center", central)):
        out = list(FacePipeline(restorer_factory=factory, detector=detector, faces=mode).run(frames))
        assert all(len(r.faces) == 1 for r in out), mode
        assert [_who(scene, r.index + EMPTY_HEAD, r.faces[0].landmarks) for r in out] == expect, mode
