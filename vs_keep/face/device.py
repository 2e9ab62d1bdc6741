"""Where frames, crops and restored faces live: the few conversions the engine (the random-access restorer behind
the filter and the CLI) needs for the CUDA frame path.

On CPU (frame device None) these are exactly the numpy steps the engines always had. With a frame device
(`kernels.select.frame_device`: the CUDA device when the engine runs there) a frame is copied to it once, the
crops, the model's input and output and the paste-back stay there, and the finished frame comes back once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..convert import model_to_unit, unit_to_model

__all__ = ["crops_to_clip", "model_to_faces", "to_frame_device", "to_host"]


def to_frame_device(frame: np.ndarray | Tensor, device: torch.device | None) -> np.ndarray | Tensor:
    """The frame as the engine keeps it: unchanged for device None, else a tensor on `device` (the one copy in)."""
    if device is None or isinstance(frame, Tensor):
        return frame if device is None or frame.device == device else frame.to(device)  # type: ignore[union-attr]
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device, copy=True)


def crops_to_clip(crops: Sequence[np.ndarray | Tensor]) -> Tensor:
    """(T, 3, S, S) model input in [-1, 1] from T aligned crops (S, S, 3) in [0, 1], on the crops' device."""
    if isinstance(crops[0], Tensor):
        return unit_to_model(torch.stack(list(crops)).permute(0, 3, 1, 2))  # type: ignore[arg-type]
    return unit_to_model(torch.from_numpy(np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2))))


def model_to_faces(y: Tensor, *, exact: bool = False, on_device: bool = False) -> np.ndarray | Tensor:
    """(T, S, S, 3) faces in [0, 1] from model output (T, 3, S, S) in [-1, 1]: a numpy array (the cv2 path), or
    with `on_device` a tensor where y is. exact: quantised to uint8 levels like the official code."""
    out = model_to_unit(y).permute(0, 2, 3, 1)
    if exact:  # the official code converts the restored face to uint8 before pasting
        out = torch.round(out * 255.0) / 255.0
    return out.contiguous() if on_device else np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)


def to_host(image: np.ndarray | Tensor) -> np.ndarray:
    """The finished frame (or alpha) as a numpy array (the one copy out)."""
    return image.detach().cpu().numpy() if isinstance(image, Tensor) else image
