"""Run the face engine (`vs_keep.face_engine`) the way the CLI does, and measure where it pasted faces.

`paste_alpha` recomputes the blend weight of a frame's faces from their placements with the public pure stages
(alignment matrix, official soft mask): the engine returns images, and tests need to know which pixels it was
allowed to touch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vs_keep.face import FacePaste, PlacedFace, alignment_matrix, paste_layer
from vs_keep.face_engine import FaceEngine, RenderedFrame
from vs_keep.stream import restore_stream


def linear_pass(frames: Sequence[np.ndarray], factory, detector, **options) -> list[RenderedFrame]:
    """Every frame in order through `restore_stream` (the CLI's path), engine options as `FaceEngine`."""
    engine = FaceEngine(restorer_factory=factory, detector=detector, **options)
    return list(restore_stream(engine, iter(frames), len(frames)))


def paste_alpha(shape: tuple[int, ...], faces: Sequence[PlacedFace], face_size: int, upscale: int = 1) -> np.ndarray:
    """(H·upscale, W·upscale) float32 weight of the pasted faces (0 = pixel untouched) for a frame of `shape`."""
    blank = np.zeros((face_size, face_size, 3), np.float32)
    pastes = [FacePaste(blank, alignment_matrix(f.landmarks, face_size, "lstsq")) for f in faces]
    return paste_layer(pastes, shape[:2], upscale=upscale).alpha
