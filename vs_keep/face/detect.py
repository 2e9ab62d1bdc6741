"""Detector factory: one small interface over MTCNN (default, bundled weights) and RetinaFace (user weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .track import select_faces
from .types import Detection, Detector

__all__ = ["DETECTORS", "create_detector", "detect_faces", "to_uint8"]

DETECTORS = ("mtcnn", "retinaface_resnet50", "retinaface_mobilenet0.25", "retinaface_mobile0.25")


def create_detector(name: str = "mtcnn", device: str | torch.device = "cpu", **opts: object) -> Detector:
    """A Detector by name. mtcnn options: min_face_size, thresholds, factor, score_threshold. RetinaFace options:
    weights (file or folder; default: the vs-keep weights cache), conf_threshold, nms_threshold, resize."""
    if name == "mtcnn":
        from .mtcnn import MTCNN

        return MTCNN(device=device, **opts)  # type: ignore[arg-type]
    if name.startswith("retinaface"):
        from .facexlib_backend import RETINAFACE, RetinaFaceDetector

        if name in RETINAFACE:
            return RetinaFaceDetector(name=name, device=device, **opts)  # type: ignore[arg-type]
    raise InputError(f"create_detector: unknown face detector name={name!r}; use one of {', '.join(DETECTORS)}")


def to_uint8(frame: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Detector input: uint8 frames as they are, float frames in [0, 1] rounded to uint8 (arrays or tensors)."""
    if isinstance(frame, torch.Tensor):
        return frame if frame.dtype == torch.uint8 else (frame.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    if frame.dtype == np.uint8:
        return frame
    return np.clip(np.rint(np.asarray(frame, np.float32) * 255.0), 0, 255).astype(np.uint8)


def detect_faces(
    detector: Detector, frame: np.ndarray | torch.Tensor, *, faces: str = "all", min_face_size: float = 0.0,
    max_face_size: float | None = None, select: np.ndarray | None = None,
) -> list[Detection]:
    """Pure per-frame step of the pipeline: detect on frame (H, W, 3) RGB uint8/float, keep faces by mode/size.

    frame may be a torch tensor on the engine's device (`kernels.select.frame_device`): detectors that accept
    tensors (MTCNN) keep it there; others get one host copy."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"detect_faces: frame must be an HxWx3 RGB array, got shape {tuple(frame.shape)}")
    image = to_uint8(frame)
    if isinstance(image, torch.Tensor):
        if not getattr(detector, "accepts_tensors", False):
            image = image.cpu().numpy()
        else:
            image = image.contiguous()
    if isinstance(image, np.ndarray):
        image = np.ascontiguousarray(image)
    found: Sequence[Detection] = detector.detect(image)  # type: ignore[arg-type]
    return select_faces(found, faces=faces, min_face_size=min_face_size, frame_shape=tuple(frame.shape[:2]),
                        max_face_size=max_face_size, select=select)
