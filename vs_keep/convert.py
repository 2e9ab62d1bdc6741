"""The model's [-1, 1] range, in one place: pixels in [0, 1] (or uint8) to model input and model output back, with
the official op order (so uint8 results match the official script)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["model_to_rgb_uint8", "model_to_unit", "rgb_uint8_to_model", "unit_to_model"]


def unit_to_model(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1] as the official script: (x - 0.5) / 0.5 (the same bits as 2x - 1: scaling by 2 commutes
    with rounding)."""
    return (x - 0.5) / 0.5


def model_to_unit(y: Tensor) -> Tensor:
    """Raw model output -> float32 in [0, 1]: clamp to [-1, 1], then (y + 1) / 2."""
    return (y.detach().float().clamp(-1, 1) + 1) / 2


def rgb_uint8_to_model(images: np.ndarray | Tensor, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """(H,W,3) or (T,H,W,3) uint8 RGB -> (T,3,H,W) float in [-1,1]: x/255, then `unit_to_model`."""
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t[None]
    return unit_to_model(t.to(device=device).permute(0, 3, 1, 2).float() / 255.0).to(dtype)


def model_to_rgb_uint8(x: Tensor) -> np.ndarray:
    """(T,3,H,W) raw model output -> (T,H,W,3) uint8 RGB: `model_to_unit`, x255, round."""
    return (model_to_unit(x) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
