"""Which faces to restore in one chunk of frames, from a bounded window of per-frame detections.

The official script restores chunks [0, 20), [20, 40), ... independently, so chunk c of a video can be computed
from the frames of that chunk plus the detections around it: tracks are linked over the window, each track's
landmarks are smoothed (σ = 5 frames, radius 20) and every track present in the chunk becomes one segment that a
restorer processes as one clip. `chunk_window` says which frames' detections that takes; `plan_chunk` is a pure
function of them, which is what lets the random-access engine (`vs_keep.face_engine`) compute any chunk alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .smooth import SIGMA, gaussian_radius, smooth_at
from .track import FACES_MODES, LinkParams, link_tracks
from .types import Detection

__all__ = [
    "Segment", "check_restore_layout", "check_tiny_min", "chunk_window", "plan_chunk",
]


def check_restore_layout(faces: str, chunk: int, upscale: int) -> None:
    """The layout options of the face engine, checked in one place (engine options and the engine itself)."""
    if faces not in FACES_MODES:
        raise InputError(f"faces must be one of {', '.join(map(repr, FACES_MODES))}, got {faces!r}")
    for name, value in (("chunk", chunk), ("upscale", upscale)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")


def check_tiny_min(tiny_min: float, min_face: float) -> None:
    """Faces with a box side in [tiny_min, min_face) go to the tiny-face restorer: the range must not be empty."""
    if not 0 < tiny_min < min_face:
        raise InputError(f"tiny_min must be in (0, min_face={min_face:g}): faces in between go to DIC, got {tiny_min}")


@dataclass(frozen=True, eq=False)
class Segment:
    """One track inside one chunk: consecutive frames and their smoothed landmarks.

    frames: (T,) int64; landmarks: (T, 5, 2) float64; detected: (T,) bool (False = filled over a short gap).
    """

    frames: np.ndarray
    landmarks: np.ndarray
    detected: np.ndarray


def chunk_window(start: int, stop: int, *, max_gap: int, sigma: float = SIGMA) -> tuple[int, int]:
    """Frames [lo, hi) whose detections `plan_chunk(start, stop)` needs (clip to the video length yourself).

    Right: smoothing reaches r frames past the chunk, a gap there is filled from the next detection (up to
    max_gap + 1 frames on), and deciding that a track has ended takes max_gap + 1 more frames. Left: the same
    reach plus one extra gap so tracks entering the window are linked as they would be with full history.
    """
    r = gaussian_radius(sigma)
    return max(start - r - 2 * (max_gap + 1), 0), stop + r + max_gap + 1


def plan_chunk(
    detections: Mapping[int, Sequence[Detection]],
    start: int,
    stop: int,
    *,
    length: int | None = None,
    link: LinkParams = LinkParams(),
    sigma: float = SIGMA,
    ends: str = "linear",
) -> list[Segment]:
    """Segments of chunk [start, stop) from `detections` (frame -> selected detections) covering
    `chunk_window(...)` clipped to [0, length). length: number of frames in the video when known (the stream
    has ended), else None. ends: smoothing at track ends, "linear" (unbiased for moving faces) or "reflect"
    (official; see `smooth`)."""
    lo, hi = chunk_window(start, stop, max_gap=link.max_gap, sigma=sigma)
    if length is not None:
        hi, stop = min(hi, length), min(stop, length)
    missing = [f for f in (lo, hi - 1) if f not in detections]
    if missing:
        raise InputError(
            f"plan_chunk: detections for frames {lo}..{hi - 1} are needed for chunk [{start}, {stop}); "
            f"frame {missing[0]} is missing"
        )
    segments = []
    for track in link_tracks(detections, range(lo, hi), link):
        first, last = track.first, track.last
        f0, f1 = max(first, start), min(last, stop - 1)
        if f1 < f0:
            continue
        frames = np.arange(f0, f1 + 1, dtype=np.int64)
        smoothed = smooth_at(frames, np.array(track.times), track.landmark_array(), first, last, sigma=sigma, ends=ends)
        observed = set(track.times)
        segments.append(
            Segment(
                frames=frames,
                landmarks=smoothed.reshape(-1, 5, 2),
                detected=np.array([int(f) in observed for f in frames]),
            )
        )
    return segments
