"""Value types shared by the face stages: one detection, the detector protocol, a face placed in a frame.

They are plain frozen dataclasses of numpy arrays so that every stage can stay a pure function and a GPU twin or
the VapourSynth plugin can pass them around without knowing which stage produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Detection", "Detector", "PlacedFace"]


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found in one frame, in the frame's pixel coordinates (pixel centres at integers).

    box: (4,) float32 x1, y1, x2, y2; score: detector confidence in [0, 1];
    landmarks: (5, 2) float32 x, y in RetinaFace order (image-left eye, image-right eye, nose tip,
    image-left mouth corner, image-right mouth corner).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float32).reshape(4))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2))
        object.__setattr__(self, "score", float(self.score))

    @property
    def size(self) -> float:
        """Shorter side of the box: what `min_face_size` is compared with."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float64)


@runtime_checkable
class Detector(Protocol):
    """Anything with `detect(rgb_uint8_hwc) -> list[Detection]`, sorted by descending score."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


@dataclass(frozen=True, eq=False)
class PlacedFace:
    """One track's face in one frame after smoothing: what alignment and paste-back need.

    landmarks: (5, 2) float64 smoothed landmarks; detected: False when the frame was filled in by interpolation
    over a short detection gap.
    """

    track: int
    frame: int
    landmarks: np.ndarray
    detected: bool = True
