"""Identity similarity (IDS) between restored and reference faces, frame by frame.

Two embeddings:
- ArcFace, when the user supplies an ONNX export (e.g. insightface's `w600k_r50.onnx` or any model taking a
  1x3x112x112 aligned face scaled to [-1, 1] and returning one embedding). This is what the KEEP paper reports.
  No ArcFace weights are obtainable offline, so nothing is bundled.
- dlib's 128-d ResNet descriptor (optional `identity` extra, CC0 weights). Its cosine range is compressed
  (different people still score ~0.8-0.9), so it is labelled "dlib-resnet128" and must not be compared with
  ArcFace numbers from papers; its L2 distance (same person < 0.6) is reported too.

Both faces of a pair are cropped from the reference frame's face location, so a restoration that moves the face
is penalised instead of being re-detected somewhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, WeightsNotFoundError
from ..face.align import estimate_similarity
from .faces import DlibModels, FaceRef

__all__ = ["ARCFACE_TEMPLATE_112", "ArcFaceOnnx", "IdentityMetric", "align_112", "cosine"]

log = logging.getLogger(__name__)

# ArcFace's canonical 112x112 positions of the 5 points (insightface alignment), RetinaFace order.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def align_112(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """ArcFace-style 112x112 aligned RGB crop from 5 landmarks."""
    m = estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)  # least-squares rotation, scale and shift
    return cv2.warpAffine(rgb, m, (112, 112), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


class ArcFaceOnnx:
    """An ArcFace-type ONNX embedding network on CPU (onnxruntime)."""

    def __init__(self, path: str | Path, *, bgr: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"--arcface {path}: file not found (supply an ArcFace ONNX model)")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise InputError("--arcface needs onnxruntime: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"--arcface {path}: not a loadable ONNX model ({exc})") from exc
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3") or shape[2:] != [112, 112]:
            raise InputError(f"--arcface {path}: input shape {shape}, expected (N,3,112,112) as ArcFace models take")
        self._input = inp.name
        self.bgr = bgr
        self.name = f"arcface-onnx:{path.name}"

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Unit-length embedding of the face at `landmarks` in an RGB uint8 frame."""
        crop = align_112(rgb, landmarks)
        if self.bgr:
            crop = crop[:, :, ::-1]
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        out = np.asarray(self._session.run(None, {self._input: np.ascontiguousarray(blob)})[0], np.float64).ravel()
        norm = np.linalg.norm(out)
        return out / norm if norm > 0 else out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


class IdentityMetric:
    """Per-frame IDS with every available embedding; `primary` names the one reported as `ids`."""

    def __init__(self, *, arcface: ArcFaceOnnx | None, dlib_models: DlibModels | None) -> None:
        self.arcface = arcface
        self.dlib = dlib_models
        self.per_frame: dict[str, list[float]] = {}
        if arcface is not None:
            self.per_frame["ids_arcface"] = []
        if dlib_models is not None:
            self.per_frame["ids_dlib"] = []
            self.per_frame["l2_dlib"] = []
        self.primary = "ids_arcface" if arcface is not None else ("ids_dlib" if dlib_models is not None else None)

    @property
    def backend(self) -> str | None:
        if self.arcface is not None:
            return self.arcface.name
        if self.dlib is not None:
            return "dlib-resnet128 (not ArcFace; cosine range is compressed)"
        return None

    def update(self, ref: np.ndarray, out: np.ndarray, face: FaceRef | None) -> None:
        nan = float("nan")
        if self.arcface is not None:
            value = nan
            if face is not None:
                value = cosine(self.arcface.embed(ref, face.landmarks), self.arcface.embed(out, face.landmarks))
            self.per_frame["ids_arcface"].append(value)
        if self.dlib is not None:
            sim, dist = nan, nan
            if face is not None:
                a, b = self.dlib.descriptor(ref, face.box), self.dlib.descriptor(out, face.box)
                sim, dist = cosine(a, b), float(np.linalg.norm(a - b))
            self.per_frame["ids_dlib"].append(sim)
            self.per_frame["l2_dlib"].append(dist)

    @property
    def ids(self) -> list[float]:
        return self.per_frame[self.primary] if self.primary else []
