"""Restoration of already-aligned face frames (the official `--has_aligned` mode), streaming in chunks.

Every frame is resized to the model's face size (bilinear, as the official script), restored in chunks of `chunk`
frames (KEEP state resets at each chunk start, exactly the official chunking) and converted back to uint8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ContextManager, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .convert import model_to_rgb_uint8, rgb_uint8_to_model
from .models.info import model_info

__all__ = ["resize_to_face", "restore_aligned", "run_model"]


def resize_to_face(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[:2] == (size, size):
        return rgb
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)


def run_model(model: nn.Module, faces: torch.Tensor, fidelity: float = 0.5,
              autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> torch.Tensor:
    """One chunk (T,3,S,S) in [-1,1] through KEEP (one chunk) or CodeFormer (frame batch, AdaIN, weight w)."""
    with torch.inference_mode(), autocast():
        if model_info(model).takes_fidelity:
            return model(faces, w=fidelity, adain=True)
        return model(faces)


def restore_aligned(
    model: nn.Module, frames: Iterable[np.ndarray], *, chunk: int = 20, fidelity: float = 0.5,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> Iterator[np.ndarray]:
    """Yield restored (S,S,3) uint8 RGB frames, one per input frame, in order. `autocast`: the model's precision
    context (from `vs_keep.engine.load_model`)."""
    size = int(model.face_size)
    param = next(model.parameters())
    buf: list[np.ndarray] = []

    def flush() -> Iterator[np.ndarray]:
        x = rgb_uint8_to_model(np.stack(buf), device=param.device, dtype=param.dtype)
        yield from model_to_rgb_uint8(run_model(model, x, fidelity, autocast).float())
        buf.clear()

    for rgb in frames:
        buf.append(resize_to_face(rgb, size))
        if len(buf) == chunk:
            yield from flush()
    if buf:
        yield from flush()
