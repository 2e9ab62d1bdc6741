"""Optional Real-ESRGAN background upsampler for paste-back (user-supplied RealESRGAN_x2plus weights).

Like the official script it runs the network on overlapping tiles (tile 400, padding 40) so memory does not
depend on the frame size, and resizes with Lanczos when the requested factor differs from the network's.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..models.checkpoint import load_strict
from .weightfiles import find_weights, load_plain_state_dict
from .rrdbnet import build_rrdbnet

__all__ = ["RealESRGANUpsampler"]


class RealESRGANUpsampler:
    """Callable(frame, upscale) -> upscaled frame (same dtype), usable as `paste_faces(background=...)`."""

    def __init__(self, *, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
                 tile: int = 400, tile_pad: int = 40, dtype: torch.dtype = torch.float32) -> None:
        path = find_weights(weights, "realesrgan_x2plus", "RealESRGAN_x2plus.pth")
        sd = load_plain_state_dict(path)
        net = build_rrdbnet(sd)
        load_strict(net, sd, path, "RRDBNet (Real-ESRGAN)")
        self.device, self.dtype = torch.device(device), dtype
        self.net = net.eval().requires_grad_(False).to(self.device, dtype)
        self.scale, self.tile, self.tile_pad = net.scale, int(tile), int(tile_pad)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,h,w) -> (1,3,s·h,s·w), padding h, w (reflect) to what the pixel unshuffle needs."""
        mult = 4 // self.scale
        h, w = x.shape[2:]
        ph, pw = (-h) % mult, (-w) % mult
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        with torch.inference_mode():
            y = self.net(x.to(self.device, self.dtype)).float().cpu()
        return y[:, :, : h * self.scale, : w * self.scale]

    def upscale_net(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 [0, 1] -> (s·H, s·W, 3) float32 [0, 1], tile by tile."""
        h, w = image.shape[:2]
        s, t, p = self.scale, self.tile, self.tile_pad
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        out = torch.empty(1, 3, h * s, w * s)
        if t <= 0:
            out = self._run(x)
        else:
            for y0 in range(0, h, t):
                for x0 in range(0, w, t):
                    y1, x1 = min(y0 + t, h), min(x0 + t, w)
                    py0, px0, py1, px1 = max(y0 - p, 0), max(x0 - p, 0), min(y1 + p, h), min(x1 + p, w)
                    y = self._run(x[:, :, py0:py1, px0:px1])
                    out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = y[
                        :, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
                    ]
        return torch.clamp(out[0], 0, 1).numpy().transpose(1, 2, 0)

    def __call__(self, frame: np.ndarray, upscale: int) -> np.ndarray:
        h, w = frame.shape[:2]
        img = frame.astype(np.float32) / 255.0 if frame.dtype == np.uint8 else frame.astype(np.float32)
        up = self.upscale_net(img)
        if up.shape[:2] != (h * upscale, w * upscale):
            up = cv2.resize(up, (w * upscale, h * upscale), interpolation=cv2.INTER_LANCZOS4)
        if frame.dtype == np.uint8:
            return np.clip(np.rint(up * 255.0), 0, 255).astype(np.uint8)
        return up.astype(frame.dtype, copy=False)
