"""Restoration of already-aligned face frames (the official `--has_aligned` mode), streaming in chunks.

Every frame is resized to the model's face size (bilinear, as the official script), restored in chunks of `chunk`
frames (KEEP state resets at each chunk start, exactly the official chunking) and converted back to uint8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ContextManager, Iterable, Iterator

import numpy as np
from torch import nn

from .convert import model_to_rgb_uint8, rgb_uint8_to_model
from .face.restorers import ModuleRestorer

__all__ = ["resize_to_face", "restore_aligned"]


def resize_to_face(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[:2] == (size, size):
        return rgb
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)


def restore_aligned(
    model: nn.Module, frames: Iterable[np.ndarray], *, chunk: int = 20, fidelity: float = 0.5,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> Iterator[np.ndarray]:
    """Yield restored (S,S,3) uint8 RGB frames, one per input frame, in order: each chunk is one forward call of
    the network (`face.restorers.ModuleRestorer`). `autocast`: the model's precision context (from
    `vs_keep.engine.load_model`)."""
    restorer = ModuleRestorer(model, fidelity=fidelity, autocast=autocast)
    buf: list[np.ndarray] = []

    def flush() -> Iterator[np.ndarray]:
        yield from model_to_rgb_uint8(restorer(rgb_uint8_to_model(np.stack(buf))))
        buf.clear()

    for rgb in frames:
        buf.append(resize_to_face(rgb, restorer.face_size))
        if len(buf) == chunk:
            yield from flush()
    if buf:
        yield from flush()
