"""Tiny-face mode: faces too small for KEEP go through DIC (16x16 -> 128x128, with 68 landmarks), per frame.

A tiny face is cropped the way DIC was trained (a square around the landmark box, resized to 16x16 with
antialiased bicubic, as PIL's BICUBIC did in its data pipeline), restored x8, and pasted back with the same
soft-mask machinery as KEEP faces (`FacePaste` with the crop's similarity matrix). DIC is a per-frame model, so
random access stays trivially deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .boxes import square_boxes
from .paste import FacePaste
from .types import Detection

__all__ = ["TinyFace", "TinyFaceRestorer"]


@dataclass(frozen=True, eq=False)
class TinyFace:
    """One tiny face in one frame: the input-pixel square it was cropped from and its 68 landmarks (x, y in input
    pixels, from DIC's last heatmaps)."""

    frame: int
    box: np.ndarray  # (4,) x0, y0, x1, y1 of the square crop
    landmarks68: np.ndarray  # (68, 2) float32


class TinyFaceRestorer:
    """Restore tiny faces with a loaded DIC module (`vs_keep.models.load` of a DIC checkpoint)."""

    def __init__(self, module: nn.Module) -> None:
        if not hasattr(module, "num_keypoints") or getattr(module, "scale", None) != 8:
            raise InputError("tiny_weights must hold a DIC model (x8, 16x16 -> 128x128)")
        if getattr(module, "input_mean", None) is None:
            from ..models.dic import TRAINING_MEAN

            module.input_mean = TRAINING_MEAN  # official files: the training code shifted the mean outside the net
        self.module = module
        self.in_size = int(getattr(module, "input_size", 16))
        self.out_size = self.in_size * 8
        p = next(module.parameters())
        self.device, self.dtype = p.device, p.dtype

    def _crop(self, frame: np.ndarray, m: np.ndarray) -> torch.Tensor:
        """(3, 16, 16) in [0, 1]: the square of the frame that `m` maps onto the 128x128 crop, sampled with the
        frame's edge replicated, then antialiased bicubic down to 16x16."""
        import cv2

        img = frame.astype(np.float32) / 255.0 if frame.dtype == np.uint8 else frame.astype(np.float32)
        interp = cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_CUBIC
        hr = cv2.warpAffine(img, m, (self.out_size, self.out_size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
        t = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))[None]
        lr = F.interpolate(t, size=(self.in_size, self.in_size), mode="bicubic", antialias=True, align_corners=False)
        return lr[0].clamp(0, 1)

    def restore(self, frame: np.ndarray, detections: list[Detection], index: int) -> list[tuple[FacePaste, TinyFace]]:
        """Restore every tiny face of one frame: paste entries and landmark records, in detection order."""
        if not detections:
            return []
        from ..models.dic import heatmaps_to_landmarks

        boxes = square_boxes(np.stack([d.box for d in detections]))  # around each box, side = its longer side
        scales = self.out_size / (boxes[:, 2] - boxes[:, 0])
        # frame -> 128 crop
        matrices = [np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float64) for s, (x0, y0, _, _) in zip(scales, boxes)]
        x = torch.stack([self._crop(frame, m) for m in matrices]).to(self.device, self.dtype)
        with torch.inference_mode():
            sr_list, heat_list = self.module(x)
        sr = sr_list[-1].float().clamp(0, 1).cpu().numpy().transpose(0, 2, 3, 1)
        lms = heatmaps_to_landmarks(heat_list[-1].float(), out_size=self.out_size).cpu().numpy()
        out = []
        for k, (box, s, matrix) in enumerate(zip(boxes, scales, matrices)):
            lm = lms[k] / s + box[:2]
            out.append(
                (FacePaste(np.ascontiguousarray(sr[k], np.float32), matrix), TinyFace(index, box.astype(np.float32), lm.astype(np.float32)))
            )
        return out
