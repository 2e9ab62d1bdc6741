"""The plan of one block of frames: which faces each frame restores, in which run, with which landmarks.

Values only: `FaceEngine.plan_block` makes them, the VapourSynth filter carries them between its nodes
as frame props (`plugin/props.py`), and crops, runs and paste-back read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .face import PlacedFace
from .face.types import Detection
from .sequencer import Span

__all__ = ["BlockPlan", "ChunkPlan", "FacePlan"]


@dataclass(frozen=True, eq=False)
class FacePlan:
    """One track's face in one frame of a chunk's run: where its segment (frames first .. first + length - 1 of
    the run) starts, and its smoothed landmarks here. The first `prime` frames of the segment lie before the chunk
    (`overlap=`/`stabilize=` priming: restored only to warm the state, never output); first may then lie in an
    earlier block."""

    track: int
    frame: int
    first: int
    length: int
    landmarks: np.ndarray  # (5, 2) float64
    detected: bool
    prime: int = 0

    @property
    def index(self) -> int:
        """Position of this frame among the track's output frames (`ClipRun.frame`; priming frames excluded)."""
        return self.frame - self.first - self.prime

    @property
    def placed(self) -> PlacedFace:
        return PlacedFace(track=self.track, frame=self.frame, landmarks=self.landmarks, detected=self.detected)


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """One chunk: its faces per frame (in track order) and the tiny-face detections per frame. `faces` also holds
    the faces of the priming frames before `span.start` (see `FacePlan`); only frames of the span are output."""

    span: Span
    faces: dict[int, tuple[FacePlan, ...]]
    small: dict[int, tuple[Detection, ...]]

    def position(self, frame: int, track: int) -> int:
        """Index of `track` among the faces of `frame`."""
        for i, face in enumerate(self.faces.get(frame, ())):
            if face.track == track:
                return i
        raise InputError(f"track {track} has no face in frame {frame} of chunk [{self.span.start}, {self.span.stop})")


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """The chunks of one block [base, base + chunk) (one chunk unless scene cuts split the block)."""

    base: int
    chunks: tuple[ChunkPlan, ...]

    def chunk_of(self, n: int) -> ChunkPlan:
        for c in self.chunks:
            if c.span.start <= n < c.span.stop:
                return c
        raise InputError(f"frame {n} is not in block {self.base}")

