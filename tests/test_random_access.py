"""Random-access restoration (what the VapourSynth filter runs): pure function of the chunk, seek cost, scene cuts,
and equality with the CLI's linear pass."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from data.face_scenes import two_face_scene
from vs_keep.face import create_detector, restorer_factory
from vs_keep.models import load
from vs_keep.models.synthetic import write_synthetic_checkpoint
from vs_keep.face_engine import FaceEngine
from vs_keep.sequencer import Span
from vs_keep.stream import restore_stream
from threaded_requests import request_concurrently

N, CHUNK = 16, 6


class ListAccess:
    def __init__(self, frames: list[np.ndarray], cuts: set[int] = frozenset()) -> None:
        self.frames, self.cuts, self.num_frames = frames, set(cuts), len(frames)

    def frame(self, n: int) -> np.ndarray:
        return self.frames[n]

    def scene_start(self, n: int) -> bool:
        return n in self.cuts


class CountingRestorer:
    """The real KEEP module behind a counter of chunk calls and their lengths."""

    def __init__(self, factory) -> None:
        self.factory, self.face_size, self.calls = factory, factory.face_size, []

    def __call__(self, track: int):
        inner = self.factory(track)

        def run(x: torch.Tensor) -> torch.Tensor:
            self.calls.append(int(x.shape[0]))
            return inner(x)

        return run


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(2)
    return load(write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small"))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return two_face_scene(n=N).frames


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn", "cpu", min_face_size=20.0)


def engine(net, detector, **kw) -> tuple[FaceEngine, CountingRestorer]:
    counting = CountingRestorer(restorer_factory(net))
    return FaceEngine(restorer_factory=counting, detector=detector, chunk=CHUNK, **kw), counting


@pytest.fixture(scope="module")
def linear(net, detector, frames) -> list[np.ndarray]:
    eng, _ = engine(net, detector)
    access = ListAccess(frames)
    return [eng.render(n, access).image for n in range(N)]


def test_cli_linear_pass_matches_random_access(net, detector, frames, linear) -> None:
    """`restore_stream` (the CLI: frames arrive once, in order, and are released) gives the filter's frames."""
    eng, _ = engine(net, detector)
    streamed = [r.image for r in restore_stream(eng, iter(frames), N)]
    assert len(streamed) == N
    for n in range(N):
        assert np.array_equal(streamed[n], linear[n]), n


def test_any_order_and_threads_equal_linear(net, detector, frames, linear) -> None:
    eng, counting = engine(net, detector, cache_chunks=1)
    access = ListAccess(frames)
    order = [15, 14, 3, 9, 0, 0, 12, 5, 6, 1, 13, 2, 8, 11, 4, 7, 10, 15, 0]
    random.Random(1).shuffle(order)
    results = request_concurrently(lambda n: eng.render(n, access).image, order, threads=8)
    for n in range(N):
        assert np.array_equal(results[n], linear[n]), n


def test_seek_costs_at_most_one_chunk_and_steps_advance_one_by_one(net, detector, frames) -> None:
    eng = FaceEngine(restorer_factory=restorer_factory(net), detector=detector, chunk=CHUNK)
    access = ListAccess(frames)
    faces = len(eng.render(9, access).faces)  # a cold seek into the middle of chunk [6, 12)
    assert faces >= 1
    assert eng.stats["model_steps"] <= faces * CHUNK  # here: (9 - 6 + 1) steps per track
    for n in (10, 11):  # consecutive requests: one recurrent step per track present in the frame
        before = eng.stats["model_steps"]
        present = len(eng.render(n, access).faces)
        assert present >= 1 and eng.stats["model_steps"] - before == present
    before = eng.stats["model_steps"]
    for n in (6, 7, 8, 9):  # earlier frames of the chunk were computed on the way: no model work
        eng.render(n, access)
    assert eng.stats["model_steps"] == before and eng.stats["chunks_planned"] == 1


def test_scene_cut_resets_state(net, detector, frames, linear) -> None:
    eng, counting = engine(net, detector)
    access = ListAccess(frames, cuts={9})
    seq = eng.sequencer
    assert seq.span(10, access.scene_start, N) == Span(9, 12) and seq.span(8, access.scene_start, N) == Span(6, 9)
    out = [eng.render(n, access).image for n in range(6, 12)]
    assert counting.calls and max(counting.calls) <= 3  # no clip crosses the cut
    # the cut chunk differs from the uncut run (tracks and smoothing stop at the cut)
    assert any(not np.array_equal(out[k], linear[6 + k]) for k in range(6))
    eng2, _ = engine(net, detector, scene_reset=False)
    assert eng2.sequencer.span(10, access.scene_start, N) == Span(6, 12)


def test_a_worker_thread_with_another_torch_thread_count_gives_the_same_frames(net, detector, frames, linear) -> None:
    """OpenMP keeps torch's intra-op thread count per OS thread: a worker first used at 1 thread stays at 1 after
    the main thread moves to 2 (what a VapourSynth worker does when a script changes the setting). The engine runs
    its CPU ops at the count it was built with on every thread, so the worker gives the main thread's frames."""
    from concurrent.futures import ThreadPoolExecutor

    assert torch.get_num_threads() == 2  # the `net` fixture's setting, which `linear` was rendered with
    with ThreadPoolExecutor(1) as pool:
        torch.set_num_threads(1)
        try:
            assert pool.submit(torch.get_num_threads).result() == 1  # the worker's count is now fixed at 1
        finally:
            torch.set_num_threads(2)
        assert pool.submit(torch.get_num_threads).result() == 1  # ... and stays 1: OpenMP's per-thread setting
        eng, _ = engine(net, detector)
        access = ListAccess(frames)
        got = pool.submit(lambda: [eng.render(n, access).image for n in range(CHUNK)]).result(timeout=600)
        assert pool.submit(torch.get_num_threads).result() == 2
    for n in range(CHUNK):
        assert np.array_equal(got[n], linear[n]), n
