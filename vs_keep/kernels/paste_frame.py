"""Paste-back of all faces of one frame with the frame on its device (the CUDA path of `face.paste_faces`).

Why: on CUDA the decoded frame goes to the GPU once; detection, crops, KEEP and the paste all work there and only
the finished frame comes back. Same contract as the cv2 path (`vs_keep.face.paste.paste_faces`): bilinear
background, faces blended in order into a float canvas that is rounded once, same geometry
(`geometry.paste_geometry`), same masks and prefilter (`kernels.paste_blend`, `kernels.blur`). It differs from
the cv2 path by cv2's 1/32-pixel position rounding and float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .resize import resize_linear

__all__ = ["paste_faces_tensor", "upscale_background_tensor"]


def upscale_background_tensor(frame: Tensor, upscale: int) -> Tensor:
    """cv2.resize(INTER_LINEAR) of an (H, W, 3) frame on its device (a copy when upscale is 1)."""
    if upscale == 1:
        return frame.clone()
    h, w = frame.shape[:2]
    out = resize_linear(frame.permute(2, 0, 1), h * upscale, w * upscale).permute(1, 2, 0)
    if frame.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8).contiguous()
    return out.to(frame.dtype).contiguous()


def _as_face_tensor(image: Any, device: torch.device) -> Tensor:
    """(S, S, 3) array or tensor -> (3, S, S) float32 on `device`."""
    t = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    return t.to(device=device, dtype=torch.float32).permute(2, 0, 1)


def paste_faces_tensor(frame: Tensor, faces: Sequence[Any], *, upscale: int = 1, antialias: bool = True) -> Tensor:
    """`face.paste_faces` (non-exact) for an (H, W, 3) uint8 / float [0, 1] tensor frame; faces: `FacePaste` whose
    image (and parse_mask) may be tensors on the frame's device. Returns a tensor there. (`face.paste_faces` takes
    exact=True through the cv2 path.)"""
    from . import paste_face

    out = upscale_background_tensor(frame, upscale)
    if not faces:
        return out
    is_int = out.dtype == torch.uint8
    canvas = out.to(torch.float32)  # 0..255 for uint8 frames; rounded once at the end, like the cv2 path
    for f in faces:
        if tuple(f.image.shape[2:]) != (3,) or f.image.shape[0] != f.image.shape[1]:
            raise InputError(f"paste: restored face must be (S, S, 3), got {tuple(f.image.shape)}")
        mask = None if f.parse_mask is None else torch.as_tensor(np.asarray(f.parse_mask) if not isinstance(f.parse_mask, Tensor) else f.parse_mask)
        paste_face(canvas, _as_face_tensor(f.image, frame.device), np.asarray(f.matrix), layout="hwc", upscale=upscale,
                   unit=255.0 if is_int else 1.0, parse_mask=mask, antialias=antialias)
    if is_int:
        return canvas.round().clamp(0, 255).to(torch.uint8)
    return canvas.to(out.dtype)
