"""Frame property names vs-keep reads and writes (one place, no string typos), and the exact encoding of the\nresults its internal stages pass to each other as props of tiny frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_keep.block_plan import BlockPlan, ChunkPlan, FacePlan
from vs_keep.face.types import Detection
from vs_keep.sequencer import Span

SCENE_CHANGE_PREV = "_SceneChangePrev"  # this frame starts a new scene
MATRIX = "_Matrix"
RANGE = "_Range"  # R4.2+: 1 = full, 0 = limited (the deprecated _ColorRange used the opposite numbering)

# Written by the filter (debug / downstream use)
FACES = "KeepFaces"  # int: faces pasted into this frame
TRACK_IDS = "KeepTrackIds"  # int array: track index of each face within its chunk
DETECTED = "KeepDetected"  # int array: 1 = detected in this frame, 0 = bridged over a missed detection
LANDMARKS = "KeepLandmarks"  # float array: 10 values (5 x/y pairs, input pixels) per face, smoothed
TINY_FACES = "KeepTinyFaces"  # int: tiny faces restored by DIC in this frame
TINY_LANDMARKS = "KeepTinyLandmarks"  # float array: 136 values (68 x/y pairs, input pixels) per tiny face
CHUNK_START = "KeepChunkStart"  # int: first frame of this frame's chunk (the recurrent state starts there)
CHUNK_END = "KeepChunkEnd"  # int: one past the last frame of the chunk
WRITTEN = (FACES, TRACK_IDS, DETECTED, LANDMARKS, TINY_FACES, TINY_LANDMARKS, CHUNK_START, CHUNK_END)


def is_scene_start(frame: vs.VideoFrame) -> bool:
    try:
        return bool(int(frame.props.get(SCENE_CHANGE_PREV, 0)))
    except (TypeError, ValueError):
        return False


def is_full_range(props: Mapping[str, Any], default: bool) -> bool:
    """`_Range` of a frame's props (`default` when absent)."""
    value = props.get(RANGE)
    if value is None:
        return default
    return int(value) == int(vs.RANGE_FULL)


# Internal: what the filter's stages hand each other on tiny 1x1 frames (never copied to output frames).
DET_COUNT = "KeepDetCount"  # int: faces detected in the frame
DET_BOXES = "KeepDetBoxes"  # float array: 4 per face (x1, y1, x2, y2)
DET_SCORES = "KeepDetScores"  # float array: 1 per face
DET_LANDMARKS = "KeepDetLandmarks"  # float array: 10 per face
PLAN_SPANS = "KeepPlanSpans"  # int array: start, stop of every chunk of the block
PLAN_FACES = "KeepPlanFaces"  # int array: 7 per face (chunk, frame, track, first, length, detected, prime)
PLAN_LANDMARKS = "KeepPlanLandmarks"  # float array: 10 per face (smoothed, float64 exact)
PLAN_SMALL = "KeepPlanSmall"  # float array: 17 per tiny-face detection (chunk, frame, box 4, score, landmarks 10)
CROPS = "KeepCrops"  # data: float32 (faces, S, S, 3) aligned crops of the frame's faces, in track order

_PLAN_FACE_INTS = 7
_SMALL_FLOATS = 17


def _ints(frame: vs.VideoFrame, key: str) -> list[int]:
    v = frame.props.get(key)
    return [] if v is None else ([int(v)] if isinstance(v, int) else [int(x) for x in v])


def _floats(frame: vs.VideoFrame, key: str) -> np.ndarray:
    v = frame.props.get(key)
    return np.zeros(0) if v is None else np.atleast_1d(np.asarray(v, np.float64))


def write_detections(props: Any, dets: Sequence[Detection]) -> None:
    props[DET_COUNT] = len(dets)
    if dets:  # VapourSynth cannot store empty arrays: absent = none
        props[DET_BOXES] = [float(v) for d in dets for v in d.box]
        props[DET_SCORES] = [float(d.score) for d in dets]
        props[DET_LANDMARKS] = [float(v) for d in dets for v in d.landmarks.reshape(-1)]


def read_detections(frame: vs.VideoFrame) -> list[Detection]:
    """Exact inverse of `write_detections` (float32 values survive the float64 props unchanged)."""
    count = int(frame.props[DET_COUNT])
    if count == 0:
        return []
    boxes = _floats(frame, DET_BOXES).reshape(count, 4)
    scores = _floats(frame, DET_SCORES).reshape(count)
    lms = _floats(frame, DET_LANDMARKS).reshape(count, 5, 2)
    return [Detection(box=boxes[i], score=float(scores[i]), landmarks=lms[i]) for i in range(count)]


def write_plan(props: Any, block: BlockPlan) -> None:
    props[PLAN_SPANS] = [v for c in block.chunks for v in (c.span.start, c.span.stop)]
    ints: list[int] = []
    lms: list[float] = []
    small: list[float] = []
    for ci, c in enumerate(block.chunks):
        for m in sorted(c.faces):
            for f in c.faces[m]:
                ints += [ci, f.frame, f.track, f.first, f.length, int(f.detected), f.prime]
                lms += [float(v) for v in f.landmarks.reshape(-1)]
        for m in sorted(c.small):
            for d in c.small[m]:
                small += [float(ci), float(m), *(float(v) for v in d.box), float(d.score)]
                small += [float(v) for v in d.landmarks.reshape(-1)]
    if ints:
        props[PLAN_FACES] = ints
        props[PLAN_LANDMARKS] = lms
    if small:
        props[PLAN_SMALL] = small


def read_plan(frame: vs.VideoFrame, base: int) -> BlockPlan:
    """Exact inverse of `write_plan`."""
    edges = _ints(frame, PLAN_SPANS)
    spans = [Span(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    faces: list[dict[int, list[FacePlan]]] = [{m: [] for m in range(s.start, s.stop)} for s in spans]
    small: list[dict[int, list[Detection]]] = [{m: [] for m in range(s.start, s.stop)} for s in spans]
    ints = np.asarray(_ints(frame, PLAN_FACES), np.int64).reshape(-1, _PLAN_FACE_INTS)
    lms = _floats(frame, PLAN_LANDMARKS).reshape(-1, 5, 2)
    for (ci, m, track, first, length, detected, prime), lm in zip(ints.tolist(), lms):
        face = FacePlan(track=track, frame=m, first=first, length=length, landmarks=lm.copy(), detected=bool(detected), prime=prime)
        faces[ci].setdefault(m, []).append(face)  # frames before the span: the run's priming frames
    for row in _floats(frame, PLAN_SMALL).reshape(-1, _SMALL_FLOATS):
        small[int(row[0])][int(row[1])].append(Detection(box=row[2:6], score=float(row[6]), landmarks=row[7:17].reshape(5, 2)))
    chunks = tuple(
        ChunkPlan(span=s, faces={m: tuple(v) for m, v in faces[i].items()}, small={m: tuple(v) for m, v in small[i].items()})
        for i, s in enumerate(spans)
    )
    return BlockPlan(base=base, chunks=chunks)


def write_crops(props: Any, crops: Sequence[np.ndarray]) -> None:
    if crops:
        # crops are tensors on the frame device on the CUDA frame path: one copy out (props carry bytes)
        host = [c.detach().cpu().numpy() if hasattr(c, "detach") else c for c in crops]
        props[CROPS] = np.ascontiguousarray(np.stack(host), np.float32).tobytes()


def read_crop(frame: vs.VideoFrame, index: int, size: int) -> np.ndarray:
    """Crop `index` of the frame's faces, (S, S, 3) float32."""
    data = frame.props[CROPS]
    per = size * size * 3
    return np.frombuffer(data, np.float32, count=per, offset=index * per * 4).reshape(size, size, 3)
