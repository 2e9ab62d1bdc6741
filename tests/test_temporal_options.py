"""overlap= (chunks primed on the frames before them) and stabilize= (low-band temporal stabilizer): exact random
access with both on, bounded windows and seek cost, priming = running the longer clip, the stabilizer's effect on
constructed flicker, and clear errors. Small synthetic models; real photos."""

from __future__ import annotations

import random
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from data.face_scenes import ASTRONAUT_FACE, astronaut, two_face_scene
from vs_keep.engine import EngineOptions, validate
from vs_keep.errors import InputError
from vs_keep.evaluation.flicker import jittered_frames
from vs_keep.evaluation.temporal import WarpingError
from vs_keep.face import create_detector, restorer_factory
from vs_keep.face.restorers import ClipRun
from vs_keep.face.stabilize import WINDOW, LowBandStabilizer, StabilizedRun, history
from vs_keep.models import load
from vs_keep.models.synthetic import write_synthetic_checkpoint
from vs_keep.face_engine import FaceEngine
from vs_keep.sequencer import Sequencer, Span
from vs_keep.stream import restore_stream
from threaded_requests import request_concurrently

pytestmark = pytest.mark.usefixtures("one_thread")

N, CHUNK, OVERLAP = 8, 4, 2


class ListAccess:
    """Frames from a list; records which frames were read."""

    def __init__(self, frames: list[np.ndarray], cuts: frozenset[int] = frozenset()) -> None:
        self.frames, self.cuts, self.num_frames = frames, cuts, len(frames)
        self.read: set[int] = set()

    def frame(self, n: int) -> np.ndarray:
        self.read.add(n)
        return self.frames[n]

    def scene_start(self, n: int) -> bool:
        return n in self.cuts


@pytest.fixture(scope="module")
def keep_path(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


@pytest.fixture(scope="module")
def net(keep_path):
    return load(keep_path)


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn", "cpu", min_face_size=20.0)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return two_face_scene(n=N).frames


def span_of(eng: FaceEngine, n: int, access: ListAccess) -> Span:
    return eng.sequencer.span(n, access.scene_start, access.num_frames)


def run_of(eng: FaceEngine, span: Span, access: ListAccess) -> int:
    return eng.sequencer.run_start(span, access.scene_start)


def make(net, detector, **kw) -> FaceEngine:
    opts = dict(chunk=CHUNK, overlap=OVERLAP, stabilize=0.8)
    opts.update(kw)
    return FaceEngine(restorer_factory=restorer_factory(net), detector=detector, **opts)


def test_run_start_cuts_at_clip_and_scene_starts() -> None:
    cuts = {10, 17}.__contains__

    def run_start(start: int, overlap: int, scene: bool = True) -> int:
        return Sequencer.of(chunk=20, overlap=overlap, scene_reset=scene).run_start(Span(start, start + 20), cuts)

    assert run_start(20, 0) == 20  # overlap 0: the official chunk
    assert run_start(20, 2) == 18
    assert run_start(20, 5) == 17  # never before the last scene start
    assert run_start(17, 5) == 17  # a chunk starting at a cut stays cold
    assert run_start(20, 5, scene=False) == 15  # without scene_reset cuts do not stop it
    assert run_start(2, 5) == 0 and run_start(0, 5) == 0
    assert history(0, 0.0) == 0 and history(2, 0.5) == WINDOW and history(9, 0.5) == 9


@pytest.mark.timeout(300)
def test_priming_is_the_longer_clip_with_outputs_discarded(net) -> None:
    clip = torch.rand(4, 3, net.face_size, net.face_size) * 2 - 1
    with torch.inference_mode():
        full = net(clip)
    factory = restorer_factory(net)
    primed = ClipRun(factory(0), clip, prime=2)
    assert primed.length == 2
    for k in (1, 0):
        assert torch.equal(primed.frame(k), full[2 + k].float()), k
    assert primed.steps == 4  # frame 1 of the chunk = 2 priming + 2 steps; frame 0 was computed on the way
    cold = ClipRun(factory(0), clip)  # prime=0: today's chunk
    assert torch.equal(cold.frame(3), full[3])
    with pytest.raises(InputError, match="prime"):
        ClipRun(factory(0), clip, prime=4)


@pytest.mark.timeout(600)
def test_both_options_random_order_threads_and_seeks_equal_linear(net, detector, frames) -> None:
    linear = [r.image for r in restore_stream(make(net, detector), frames, N)]
    eng = make(net, detector)
    access = ListAccess(frames)
    order = list(range(N)) + [N - 1, 0, 5]
    random.Random(3).shuffle(order)
    results = request_concurrently(lambda n: eng.render(n, access).image, order, threads=3, timeout=500)
    for n in range(N):
        assert np.array_equal(results[n], linear[n]), n
    seek = make(net, detector)  # a cold seek into the middle of the second chunk (run primed from frame 0)
    assert np.array_equal(seek.render(6, ListAccess(frames)).image, linear[6])
    # the options change the result (else this test could not fail for them)
    plain = make(net, detector, overlap=0, stabilize=0.0)
    assert not np.array_equal(plain.render(5, ListAccess(frames)).image, linear[5])


@pytest.mark.timeout(300)
def test_seek_reads_a_bounded_window_and_costs_chunk_plus_overlap(net, detector) -> None:
    frames = two_face_scene(n=64).frames
    overlap, max_gap = 3, 0
    eng = make(net, detector, overlap=overlap, stabilize=0.0, max_gap=max_gap)
    access = ListAccess(frames)
    n = 31  # last frame of chunk [28, 32): run [25, 32)
    result = eng.render(n, access)
    assert run_of(eng, result.span, access) == 25
    # window: landmark smoothing radius (20) + 2 gaps (max_gap 0) before the run, radius + 1 gap after the chunk
    assert min(access.read) == 25 - 22 and max(access.read) == 32 + 21 - 1
    faces = len(result.faces)
    assert faces >= 1
    steps = eng.stats["model_steps"]
    assert CHUNK * faces < steps <= (CHUNK + overlap) * faces  # primed, and never more than chunk + overlap
    # frames outside the window do not matter: garbage there gives the identical frame
    junk = [np.zeros_like(f) if not 3 <= m < 53 else f for m, f in enumerate(frames)]
    again = make(net, detector, overlap=overlap, stabilize=0.0, max_gap=max_gap).render(n, ListAccess(junk))
    assert np.array_equal(again.image, result.image)


@pytest.mark.timeout(300)
def test_overlap_zero_is_the_official_chunk(net, detector, frames) -> None:
    eng = make(net, detector, overlap=0, stabilize=0.0)
    access = ListAccess(frames, cuts=frozenset({5}))
    for n in range(N):
        span = span_of(eng, n, access)
        assert run_of(eng, span, access) == span.start
    span = span_of(eng, 5, access)
    eng.render(5, access)
    faces = eng.cached_block(4).chunk_of(5).faces[5]
    assert faces and all(f.prime == 0 and f.first >= span.start for f in faces)
    runs = [eng.cached_runs(span).get(f.track) for f in faces]
    assert all(type(r) is ClipRun and r.prime == 0 for r in runs)
    # with the options on, a cut still resets: the chunk starting at the cut is not primed
    on = make(net, detector, stabilize=0.0)
    assert run_of(on, span_of(on, 5, access), access) == 5 and run_of(on, span_of(on, 4, access), access) == 2
    assert run_of(make(net, detector), span_of(on, 4, access), access) == 0  # the stabilizer primes >= WINDOW


@pytest.mark.timeout(300)
def test_stream_keeps_priming_frames_when_overlap_exceeds_chunk(detector, frames) -> None:
    """The CLI's linear pass releases frames only before the run start: overlap > chunk still streams."""
    from vs_keep.face.restorers import SharedRestorerFactory, identity_restorer

    def eng() -> FaceEngine:
        factory = SharedRestorerFactory(identity_restorer, 128)
        return FaceEngine(restorer_factory=factory, detector=detector, chunk=3, overlap=5, stabilize=0.5)

    streamed = [r.image for r in restore_stream(eng(), frames, N)]
    seeker, access = eng(), ListAccess(frames)
    for n in (N - 1, 4, 0):
        assert np.array_equal(seeker.render(n, access).image, streamed[n]), n


def flicker_faces(count: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """A real face with per-frame geometry, tone, colour and shading jitter plus noise (what the bench measures)."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    face = cv2.resize(astronaut()[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return jittered_frames(face, count, seed, shift=0.5)


def _u8(f: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)


def test_stabilizer_cuts_flicker_keeps_detail_and_is_bounded() -> None:
    faces = flicker_faces(8)
    stab = LowBandStabilizer(lambda i: faces[i], 1.0)
    out = [stab.frame(i) for i in range(len(faces))]

    def warping(seq):
        w = WarpingError()
        for f in seq:
            w.update(_u8(f))
        return float(np.nanmean(w.values))

    def hf(seq):
        return float(np.mean([cv2.Laplacian(f.mean(axis=2), cv2.CV_32F)[64:-64, 64:-64].var() for f in seq]))

    assert warping(out) < warping(faces) / 2  # measured 9x at 512 px in scripts/temporal_bench.py
    assert abs(hf(out) / hf(faces) - 1) < 0.1
    # frame i is a function of faces i - WINDOW .. i only, in any request order
    i = 6
    changed = list(faces)
    changed[i - WINDOW - 1] = np.zeros_like(faces[0])
    assert np.array_equal(LowBandStabilizer(lambda j: changed[j], 1.0).frame(i), out[i])
    changed[i - WINDOW] = np.zeros_like(faces[0])
    assert not np.array_equal(LowBandStabilizer(lambda j: changed[j], 1.0).frame(i), out[i])
    shuffled = LowBandStabilizer(lambda j: faces[j], 1.0)
    for k in (7, 2, 5, 0, 6):
        assert np.array_equal(shuffled.frame(k), out[k]), k
    assert np.array_equal(LowBandStabilizer(lambda j: faces[j], 0.0).frame(5), faces[5])


@pytest.mark.timeout(300)
def test_stabilizer_with_codeformer_any_order(tmp_path) -> None:
    cf = load(write_synthetic_checkpoint(tmp_path / "cf.pth", "codeformer", "small"))
    clip = torch.from_numpy(np.stack([f.transpose(2, 0, 1) for f in flicker_faces(6, size=cf.face_size)])) * 2 - 1
    factory = restorer_factory(cf)
    linear = StabilizedRun(ClipRun(factory(0), clip, prime=2), 0.7)
    ref = [linear.frame(k) for k in range(4)]
    seek = StabilizedRun(ClipRun(factory(0), clip, prime=2), 0.7)
    for k in (3, 0, 2, 1):
        assert torch.equal(seek.frame(k), ref[k]), k
    assert seek.steps == 6  # frame 3's window reached back into the priming frames


def test_bad_values_give_one_clear_error(keep_path, tmp_path) -> None:
    for kw, match in ((dict(overlap=-1), "overlap must be an integer >= 0"), (dict(overlap=1.5), "overlap must be"),
                      (dict(stabilize=1.5), r"stabilize must be a number in \[0, 1\]"), (dict(stabilize="x"), "stabilize")):
        with pytest.raises(InputError, match=match):
            validate(EngineOptions(**kw))
    vs = pytest.importorskip("vapoursynth")
    from vs_keep import keep

    clip = vs.core.std.BlankClip(format=vs.RGB24, width=64, height=64, length=2)
    with pytest.raises(vs.Error, match="keep: overlap must be"):
        keep(clip, weights=str(keep_path), overlap=-2)
    with pytest.raises(vs.Error, match="keep: stabilize must be"):
        keep(clip, weights=str(keep_path), stabilize=2.0)
    r = subprocess.run([sys.executable, "-m", "vs_keep", "restore", str(tmp_path), str(tmp_path / "o"), "--aligned",
                        "--stabilize", "0.5", "--weights", str(keep_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "--stabilize" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.vapoursynth
@pytest.mark.timeout(600)
def test_vapoursynth_filter_with_both_options_parallel_equals_linear(keep_path, frames, tmp_path) -> None:
    vs = pytest.importorskip("vapoursynth")
    from media import write_video
    from vs_keep import keep
    from vs_keep.plugin import source

    video = write_video(tmp_path / "scene.mp4", frames, fps=25, audio=False)
    core = vs.core
    core.num_threads = 4

    def restored():
        return keep(source(video), weights=str(keep_path), chunk=CHUNK, overlap=OVERLAP, stabilize=0.8)

    def rgb(f) -> np.ndarray:
        return np.stack([np.asarray(f[p]) for p in range(3)], axis=-1).copy()

    linear_clip = restored()
    linear = []
    for n in range(N):
        with linear_clip.get_frame(n) as f:
            linear.append(rgb(f))
    clip = restored()  # fresh filter, empty caches: backward, repeated and concurrent requests
    order = [7, 3, 5, 0, 6, 1, 4, 2, 7, 0]

    def request(n: int) -> np.ndarray:
        with clip.get_frame(n) as f:
            return rgb(f)

    got = request_concurrently(request, order, threads=3, timeout=500)
    for n in range(N):
        assert np.array_equal(got[n], linear[n]), n


@pytest.mark.vapoursynth
@pytest.mark.timeout(600)
def test_vapoursynth_filter_priming_across_blocks_and_a_cut(keep_path, frames, tmp_path) -> None:
    """overlap > chunk: a run primes over two earlier blocks (whose crop frames carry their own plans); a scene cut
    stops the priming. Backward requests on a fresh filter equal a forward pass."""
    vs = pytest.importorskip("vapoursynth")
    from media import write_video
    from vs_keep import keep
    from vs_keep.plugin import source

    video = write_video(tmp_path / "scene.mp4", frames, fps=25, audio=False)
    vs.core.num_threads = 3

    def restored(overlap: int):
        clip = source(video)
        clip = clip[:5] + clip[5:6].std.SetFrameProps(_SceneChangePrev=1) + clip[6:]
        return keep(clip, weights=str(keep_path), chunk=2, overlap=overlap, stabilize=0.0)

    def rgb(f) -> np.ndarray:
        return np.stack([np.asarray(f[p]) for p in range(3)], axis=-1).copy()

    forward_clip, backward_clip, cold = restored(5), restored(5), restored(0)
    forward = [rgb(forward_clip.get_frame(n)) for n in range(N)]
    backward = {n: rgb(backward_clip.get_frame(n)) for n in reversed(range(N))}
    plain = [rgb(cold.get_frame(n)) for n in range(N)]
    for n in range(N):
        assert np.array_equal(forward[n], backward[n]), n
    for n in (0, 1, 5):  # chunks [0, 2) and [5, 6) start at the clip start or a cut: never primed
        assert np.array_equal(forward[n], plain[n]), n
    assert not np.array_equal(forward[4], plain[4])  # chunk [4, 5) primed on frames 0..3 (two earlier blocks)
