"""Pixel <-> model tensor conversions with the official op order (so uint8 results match the official script)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["model_to_rgb_uint8", "rgb_uint8_to_model"]


def rgb_uint8_to_model(images: np.ndarray | Tensor, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """(H,W,3) or (T,H,W,3) uint8 RGB -> (T,3,H,W) float in [-1,1]: x/255, then (x-0.5)/0.5 as the official script."""
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t[None]
    t = t.to(device=device).permute(0, 3, 1, 2).float() / 255.0
    return ((t - 0.5) / 0.5).to(dtype)


def model_to_rgb_uint8(x: Tensor) -> np.ndarray:
    """(T,3,H,W) raw model output -> (T,H,W,3) uint8 RGB: clamp to [-1,1], (x+1)/2, x255, round."""
    y = ((x.detach().float().clamp(-1, 1) + 1) / 2 * 255.0).round()
    return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
