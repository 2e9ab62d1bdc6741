"""Frame property names vs-keep reads and writes (one place, no string typos)."""

from __future__ import annotations

import vapoursynth as vs

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


def is_full_range(frame: vs.VideoFrame, default: bool) -> bool:
    value = frame.props.get(RANGE)
    if value is None:
        return default
    return int(value) == int(vs.RANGE_FULL)
