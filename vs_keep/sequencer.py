"""Which input frames output frame n needs, in what order a linear pass takes them, and what it may release.

Output frame n is a pure function of a bounded window of the input; random access, seeks, the VapourSynth graph
(`plugin/filter.py`), the linear pass (`vs_keep.stream.restore_stream`) and every shard (`vs_keep.shards`, a
linear pass over a window) rest on that, and all of them ask this module for the window:
- block of n: [base, base + chunk), base the last multiple of `chunk` at or before n (a block is planned at once);
- chunk of n (`Span`): the block cut at every scene start inside it (with `scene_reset`); at default settings
  exactly the official script's chunking;
- run of a chunk [start, stop): KEEP's recurrence restarts at `run_start`, up to `history` frames before start
  (priming for `overlap=`/`stabilize=`, outputs discarded; never before frame 0 or the last scene start);
- detections: those of `chunk_window(run, stop)` (landmark smoothing and gap bridging), used only inside the
  chunk's scene (`scene_limits`).
So block `base` reads frames `block_window(base)`, output frames [a, b) read `input_window(a, b)`, and a pass in
frame order may release every frame before the current chunk's run start (`release_before`): the runs of later
chunks start there or later, and the detections of older frames that their windows still ask for are cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import InputError
from .face.overlap import check_overlap
from .face.plan import chunk_window
from .face.smooth import SIGMA
from .face.stabilize import check_stabilize, history

__all__ = ["SceneFlag", "Sequencer", "Span"]

#: scene_start(m): True when frame m starts a scene
SceneFlag = Callable[[int], bool]


@dataclass(frozen=True)
class Span:
    """One chunk: frames [start, stop), each track restored as one clip (KEEP's state reset at its run start)."""

    start: int
    stop: int


@dataclass(frozen=True)
class Sequencer:
    """The frame windows of one set of engine options (`of` validates them). history: frames a chunk's run may
    start before the chunk (`vs_keep.face.stabilize.history`; 0 = the official cold chunks)."""

    chunk: int
    history: int = 0
    scene_reset: bool = True
    max_gap: int = 10
    sigma: float = SIGMA

    @classmethod
    def of(cls, *, chunk: int, overlap: int = 0, stabilize: float = 0.0, scene_reset: bool = True,
           max_gap: int = 10, sigma: float = SIGMA) -> Sequencer:
        """Validates overlap and stabilize (chunk: `vs_keep.face.plan.check_restore_layout`)."""
        return cls(chunk=int(chunk), history=history(check_overlap(overlap), check_stabilize(stabilize)),
                   scene_reset=bool(scene_reset), max_gap=int(max_gap), sigma=float(sigma))

    # -- chunks -----------------------------------------------------------------------------------------------

    def block(self, n: int) -> int:
        """First frame of the block holding frame n."""
        return n - n % self.chunk

    def spans(self, base: int, flag: SceneFlag, num_frames: int) -> list[Span]:
        """The chunks of block [base, base + chunk): cut at every scene start when scene_reset."""
        stop = min(base + self.chunk, num_frames)
        cuts = [m for m in range(base + 1, stop) if flag(m)] if self.scene_reset else []
        edges = [base, *cuts, stop]
        return [Span(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def span(self, n: int, flag: SceneFlag, num_frames: int) -> Span:
        """The chunk holding frame n."""
        if not 0 <= n < num_frames:
            raise InputError(f"frame {n} outside the clip (0..{num_frames - 1})")
        return next(s for s in self.spans(self.block(n), flag, num_frames) if s.start <= n < s.stop)

    def run_start(self, span: Span, flag: SceneFlag) -> int:
        """First frame of the run that restores `span`, primed on up to `history` frames, never before frame 0.
        With scene_reset a chunk starting at a cut runs cold (as without priming) and any other run stops at the
        latest cut in between. history 0 gives span.start (the official chunk)."""
        start = span.start
        if self.history <= 0 or start <= 0 or (self.scene_reset and flag(start)):
            return start
        lo = max(start - self.history, 0)
        if self.scene_reset:
            return next((m for m in range(start - 1, lo, -1) if flag(m)), lo)
        return lo

    def priming(self, span: Span, first: int) -> range:
        """Frames [first, span.start) a run starting at `first` primes on. Only a chunk that starts its block is
        primed (one starting at a cut runs cold), by at most `history` frames: the filter's graph relies on both."""
        if first < span.start and (span.start % self.chunk or span.start - first > self.history):
            raise RuntimeError(f"run of chunk [{span.start}, {span.stop}) starts at {first}, outside its priming window")
        return range(first, span.start)

    # -- detection windows --------------------------------------------------------------------------------------

    def detection_window(self, span: Span, run: int, num_frames: int) -> tuple[int, int]:
        """Frames [lo, hi) whose detections plan `span` (run: its `run_start`)."""
        lo, hi = chunk_window(run, span.stop, max_gap=self.max_gap, sigma=self.sigma)
        return lo, min(hi, num_frames)

    def scene_limits(self, span: Span, lo: int, hi: int, flag: SceneFlag) -> tuple[int, int]:
        """Frames [a, b) of the detection window [lo, hi) that belong to the chunk's scene."""
        if not self.scene_reset:
            return lo, hi
        a = next((m for m in range(span.start, lo, -1) if flag(m)), lo)
        b = next((m for m in range(span.stop, hi) if flag(m)), hi)
        return a, b

    def block_reach(self) -> tuple[int, int]:
        """(left, right): planning block `base` reads frames [base - left, base + chunk + right) only."""
        far = 1 << 30  # far from frame 0, so the window is not clipped there
        lo, hi = chunk_window(far - self.history, far + self.chunk, max_gap=self.max_gap, sigma=self.sigma)
        return far - lo, hi - far - self.chunk

    def block_window(self, base: int, num_frames: int) -> tuple[int, int]:
        """Frames [lo, hi) that planning and restoring block `base` read (clipped to the clip)."""
        left, right = self.block_reach()
        return max(base - left, 0), min(base + self.chunk + right, num_frames)

    def input_window(self, start: int, stop: int, num_frames: int) -> tuple[int, int]:
        """Frames [lo, hi) that output frames [start, stop) read: the union of their blocks' windows (what a shard
        decodes)."""
        if not 0 <= start < stop <= num_frames:
            raise InputError(f"frames [{start}, {stop}) are not a range of the clip's {num_frames} frames")
        return self.block_window(self.block(start), num_frames)[0], self.block_window(self.block(stop - 1), num_frames)[1]

    # -- a pass in frame order ------------------------------------------------------------------------------------

    def release_before(self, span: Span, flag: SceneFlag) -> int:
        """Once a frame of `span` is out, a pass in frame order never reads a frame before this one again."""
        return self.run_start(span, flag)
