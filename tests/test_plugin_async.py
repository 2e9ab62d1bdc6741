"""What previewers do to the filter (issue 11): every frame requested at once with get_frame_async, through
vsjetengine's load -> dispose -> reload, behind a slow Python upstream, at core.num_threads 1, 2 and 8. Each run is
a subprocess under a timeout: a deadlock (every worker parked in a callback) fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

vs = pytest.importorskip("vapoursynth")
pytest.importorskip("vsengine", reason="vsjetengine is in the test extra (pip install vsjetengine)")

from media import keep_scene  # noqa: E402
from vs_keep.errors import OOM_ADVICE  # noqa: E402

pytestmark = pytest.mark.vapoursynth
RUNNER = Path(__file__).with_name("async_requests.py")
N, CHUNK = 8, 4  # the reproduction: 8 frames, keep(src, chunk=4)
HANG = 420  # seconds; a healthy run takes well under a minute even on a busy 2-core machine


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return keep_scene(tmp_path_factory.mktemp("async"), N)


@pytest.mark.timeout(HANG + 60)
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_all_frames_at_once_through_vsjetengine_equal_linear_pass(media, tmp_path: Path, threads: int) -> None:
    out = tmp_path / "digests.json"
    cmd = [sys.executable, str(RUNNER), str(out), str(media["video"]), str(media["weights"]), str(CHUNK), str(threads), "0.05"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=HANG, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: {N} async requests at num_threads={threads} did not finish in {HANG} s")
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    got = json.loads(out.read_text())
    assert len(got["linear"]) == N
    assert got["first"] == got["linear"], "async requests differ from the linear pass"
    assert got["reloaded"] == got["linear"], "after dispose + reload the frames differ"


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), tests) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.timeout(600)
def test_work_is_done_once_and_a_seek_costs_at_most_one_chunk(media) -> None:
    """In-process, all frames at once (8 threads): every frame detected once, every face cropped once and one
    recurrent step per face and frame, so the caches really spare the stages their inputs. Then a cold seek into a
    fresh filter costs at most the steps from the chunk start."""
    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.plugin import source
    from vs_keep.plugin.filter import build_filter

    core = vs.core
    core.num_threads = 8
    engine = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))
    clip = build_filter(source(media["video"]), engine, debug_props=True, matrix_in_s=None)
    futures = [clip.get_frame_async(n) for n in range(N)]
    faces = 0
    for fut in futures:
        with fut.result(timeout=HANG) as f:
            faces += int(f.props["KeepFaces"])
    stats = engine.stats.as_dict()
    assert faces >= N  # both faces of the scene in most frames
    assert stats["detections"] == N
    assert stats["crops"] == faces
    assert stats["model_steps"] == faces
    assert stats["chunks_planned"] == N // CHUNK
    engine.close()

    engine = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))
    clip = build_filter(source(media["video"]), engine, debug_props=True, matrix_in_s=None)
    with clip.get_frame_async(N - 2).result(timeout=HANG) as f:  # frame 6 of chunk [4, 8)
        present = int(f.props["KeepFaces"])
    assert 1 <= present and engine.stats["model_steps"] <= present * (N - 2 - CHUNK + 1)
    engine.close()


def test_frame_errors_are_one_line(media) -> None:
    """Any exception in a frame callback reaches the caller as `keep: frame N: <one line>`; CUDA out-of-memory
    says what to lower."""
    import torch

    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.plugin import source
    from vs_keep.plugin.filter import build_filter, frame_error

    engine = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))

    def broken(track: int):
        raise RuntimeError("restorer exploded\nsecond line of detail")

    engine.restorer_factory = broken
    clip = build_filter(source(media["video"]), engine, debug_props=True, matrix_in_s=None)
    with pytest.raises(vs.Error) as err:
        clip.get_frame(1)
    assert str(err.value).strip().splitlines()[-1].endswith("keep: frame 1: RuntimeError: restorer exploded")
    assert "second line" not in str(err.value)
    oom = str(frame_error(3, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    assert oom == "keep: frame 3: GPU out of memory: " + OOM_ADVICE and "fp16=True" in oom
    engine.close()


@pytest.mark.timeout(600)
def test_scene_flags_arrive_as_inputs(media) -> None:
    """`_SceneChangePrev` on an upstream frame cuts the chunk there, exactly as the engine's linear composition
    does with the same cut (frames requested all at once, 2 threads)."""
    import numpy as np

    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.plugin import source
    from vs_keep.plugin.filter import build_filter

    class Frames:  # the engine's FrameAccess over decoded frames, with the same cut
        def __init__(self, frames: list, cuts: set[int]) -> None:
            self.frames, self.cuts, self.num_frames = frames, cuts, len(frames)

        def frame(self, n: int):
            return self.frames[n]

        def scene_start(self, n: int) -> bool:
            return n in self.cuts

    core = vs.core
    core.num_threads = 2
    src = source(media["video"])
    cut = core.std.Splice([src[:5], src[5].std.SetFrameProps(_SceneChangePrev=1), src[6:]])
    engine = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))
    clip = build_filter(cut, engine, debug_props=True, matrix_in_s=None)
    got = {}
    for n, fut in enumerate([clip.get_frame_async(n) for n in range(N)]):
        with fut.result(timeout=HANG) as f:
            got[n] = (np.stack([np.asarray(f[p]) for p in range(3)], -1).copy(), f.props["KeepChunkStart"],
                      f.props["KeepChunkEnd"], list(f.props.get("KeepLandmarks", [])))
    engine.close()
    frames = []
    for n in range(N):
        with src.get_frame(n) as f:
            frames.append(np.stack([np.asarray(f[p]) for p in range(3)], -1).copy())
    reference = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))
    access = Frames(frames, {5})
    assert [got[n][1:3] for n in (3, 4, 5, 7)] == [(0, 4), (4, 5), (5, 8), (5, 8)]
    for n in range(N):
        want = reference.render(n, access)
        # same plan (tracks, smoothed landmarks, chunk bounds) to the bit ...
        assert got[n][3] == [float(v) for pf in want.faces for v in np.asarray(pf.landmarks).reshape(-1)], n
        # ... and the same restored faces: the filter merges them into the source as colour + alpha
        # (face.paste.paste_layer + plugin.frames.merge_into_clip) where render() pastes them one by one into a uint8
        # frame; the two orders of float32 arithmetic may round a sample to the neighbouring level, never further
        assert np.abs(got[n][0].astype(int) - want.image.astype(int)).max() <= 1, n
    reference.close()
    # scene_detect="off": no cuts at all, the upstream's prop included (a fresh engine: the caches hold the cut)
    plain = build_engine(EngineOptions(weights=str(media["weights"]), chunk=CHUNK, device="cpu"))
    with build_filter(cut, plain, debug_props=True, matrix_in_s=None, scene_detect="off").get_frame(5) as f:
        assert (f.props["KeepChunkStart"], f.props["KeepChunkEnd"]) == (4, 8)
    plain.close()


def test_stage_props_round_trip_exactly() -> None:
    """What the stages hand each other as props decodes to the very same values (float32 detections and float64
    landmarks survive VapourSynth's float64 props bit for bit)."""
    import numpy as np

    from vs_keep.block_plan import BlockPlan, ChunkPlan, FacePlan
    from vs_keep.face.types import Detection
    from vs_keep.plugin import props as P
    from vs_keep.sequencer import Span

    rng = np.random.default_rng(0)
    det = lambda: Detection(box=rng.random(4) * 300, score=float(rng.random()), landmarks=rng.random((5, 2)) * 300)  # noqa: E731
    frame = vs.core.std.BlankClip(format=vs.GRAY8, width=1, height=1, length=1).get_frame(0).copy()
    dets = [det(), det()]
    P.write_detections(frame.props, dets)
    back = P.read_detections(frame)
    for a, b in zip(dets, back, strict=True):
        assert np.array_equal(a.box, b.box) and a.score == b.score and np.array_equal(a.landmarks, b.landmarks)
    face = lambda t, m: FacePlan(track=t, frame=m, first=8, length=3, landmarks=rng.random((5, 2)) * 300, detected=m != 9)  # noqa: E731
    block = BlockPlan(base=8, chunks=(
        ChunkPlan(Span(8, 11), faces={8: (face(0, 8), face(1, 8)), 9: (face(0, 9),), 10: ()}, small={8: (), 9: (det(),), 10: ()}),
        ChunkPlan(Span(11, 12), faces={11: ()}, small={11: (det(), det())}),
    ))
    frame = frame.copy()
    P.write_plan(frame.props, block)
    got = P.read_plan(frame, 8)
    assert [c.span for c in got.chunks] == [Span(8, 11), Span(11, 12)]
    for c, g in zip(block.chunks, got.chunks, strict=True):
        for m in c.faces:
            for a, b in zip(c.faces[m], g.faces[m], strict=True):
                assert (a.track, a.frame, a.first, a.length, a.detected) == (b.track, b.frame, b.first, b.length, b.detected)
                assert np.array_equal(a.landmarks, b.landmarks)
        for m in c.small:
            assert len(c.small[m]) == len(g.small[m])
            for a, b in zip(c.small[m], g.small[m]):
                assert np.array_equal(a.box, b.box) and np.array_equal(a.landmarks, b.landmarks) and a.score == b.score
