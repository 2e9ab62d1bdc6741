"""Per-frame face selection and frame-to-frame association into tracks.

Association is greedy on a cost mixing box overlap and landmark distance (both against the track's last
observation moved by its recent velocity), so it is deterministic and depends only on the detections it is given:
`link_tracks` over a window of frames is a pure function, which is what lets the face engine compute any chunk
alone (random access) and get the frames of a linear pass. A track ends when it has not been matched for more than `max_gap` frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .boxes import iou_matrix
from .types import Detection

__all__ = ["FACES_MODES", "LinkParams", "Track", "link_tracks", "select_faces"]

FACES_MODES = ("all", "largest", "center")


def select_faces(
    detections: Sequence[Detection], *, faces: str = "all", min_face_size: float = 0.0, frame_shape: tuple[int, int] | None = None,
    max_face_size: float | None = None, select: np.ndarray | None = None,
) -> list[Detection]:
    """Detections kept for one frame: a box side (the shorter one) in [min_face_size, max_face_size], the box centre
    on a non-zero sample of the `select` mask ((H, W), the frame's size) when one is given, then all of them, the
    largest one (the official behaviour), or the one closest to the frame centre (needs frame_shape (H, W))."""
    if faces not in FACES_MODES:
        raise InputError(f"faces must be one of {', '.join(FACES_MODES)}, got {faces!r}")
    kept = [d for d in detections if d.size >= min_face_size and (max_face_size is None or d.size <= max_face_size)]
    if select is not None:
        h, w = select.shape[:2]
        kept = [d for d in kept if select[min(max(int(d.center[1]), 0), h - 1), min(max(int(d.center[0]), 0), w - 1)]]
    if faces == "all" or len(kept) <= 1:
        return kept
    if faces == "largest":
        return [max(kept, key=lambda d: d.area)]
    if frame_shape is None:
        raise InputError("select_faces: faces='center' needs frame_shape")
    centre = np.array([frame_shape[1] / 2, frame_shape[0] / 2])
    return [min(kept, key=lambda d: float(np.sum((d.center - centre) ** 2)))]


@dataclass
class Track:
    """Observations of one face: frame indices and detections, in frame order."""

    times: list[int] = field(default_factory=list)
    dets: list[Detection] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.times[0]

    @property
    def last(self) -> int:
        return self.times[-1]

    def add(self, frame: int, det: Detection) -> None:
        self.times.append(frame)
        self.dets.append(det)

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Box (4,) and landmarks (5,2) expected at `frame`: the last observation moved at the recent velocity."""
        box = self.dets[-1].box.astype(np.float64)
        lm = self.dets[-1].landmarks.astype(np.float64)
        if len(self.times) >= 2:
            dt = self.times[-1] - self.times[-2]
            steps = frame - self.times[-1]
            vb = (box - self.dets[-2].box) / dt
            vl = (lm - self.dets[-2].landmarks) / dt
            box, lm = box + vb * steps, lm + vl * steps
        return box, lm

    def landmark_array(self) -> np.ndarray:
        """(K, 10) observed landmarks, x0 y0 x1 y1 ..."""
        return np.stack([d.landmarks.reshape(-1) for d in self.dets]).astype(np.float64)


@dataclass(frozen=True)
class LinkParams:
    """Association thresholds. A detection may join a track when the predicted box overlaps it by `min_iou`, or
    its landmarks are within `max_landmark_dist` (fraction of the box size) of the predicted ones."""

    max_gap: int = 10
    min_iou: float = 0.3
    max_landmark_dist: float = 0.5


def link_tracks(
    detections: Mapping[int, Sequence[Detection]], frames: Sequence[int] | range, params: LinkParams = LinkParams()
) -> list[Track]:
    """Tracks over `frames` (increasing indices, each a key of `detections`), ordered by their first observation."""
    if params.max_gap < 0:
        raise InputError(f"link_tracks: params.max_gap must be >= 0, got {params.max_gap}")
    tracks: list[Track] = []
    for f in frames:
        dets = detections[f]
        active = [t for t in tracks if f - t.last - 1 <= params.max_gap]
        taken: set[int] = set()
        if active and dets:
            pred = [t.predict(f) for t in active]
            iou = iou_matrix(np.stack([p[0] for p in pred]), np.stack([d.box for d in dets]))
            pairs = []
            for i, (pbox, plm) in enumerate(pred):
                scale = max(float(min(pbox[2] - pbox[0], pbox[3] - pbox[1])), 1.0)
                for j, d in enumerate(dets):
                    dist = float(np.linalg.norm(d.landmarks - plm, axis=1).mean()) / scale
                    if iou[i, j] >= params.min_iou or dist <= params.max_landmark_dist:
                        pairs.append(((1.0 - iou[i, j]) + dist, i, j))
            used_tracks: set[int] = set()
            for _cost, i, j in sorted(pairs):
                if i in used_tracks or j in taken:
                    continue
                active[i].add(f, dets[j])
                used_tracks.add(i)
                taken.add(j)
        for j, d in enumerate(dets):
            if j not in taken:
                tracks.append(Track([f], [d]))
    return tracks
