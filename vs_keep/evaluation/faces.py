"""Face location for the identity and landmark metrics: our detector (5 points) and dlib's models (optional extra).

Both are optional at run time: each loader returns None plus a one-line reason, so a report can skip a metric
instead of failing. dlib's model files come from the `face-recognition-models` package, found without importing
it (its __init__ needs pkg_resources, gone from setuptools >= 81).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

__all__ = [
    "DlibModels", "FaceFinder", "FaceRef", "create_detector_or_none", "dlib_model_dir", "five_from_68", "load_dlib",
]

log = logging.getLogger(__name__)

# dlib 68-point indices that give RetinaFace's 5 points (image-left eye, image-right eye, nose tip, mouth corners).
_LEFT_EYE, _RIGHT_EYE, _NOSE, _MOUTH_L, _MOUTH_R = slice(36, 42), slice(42, 48), 30, 48, 54


@dataclass(frozen=True)
class FaceRef:
    """Where the face is in a reference frame: box x1,y1,x2,y2 and 5 landmarks (RetinaFace order), float32."""

    box: np.ndarray
    landmarks: np.ndarray
    source: str = "detector"  # "detector" (our 5 points) or "dlib" (5 points derived from its 68)


def create_detector_or_none(name: str, device: str, **opts: object) -> tuple[object | None, str]:
    """Our face detector, or None and why not (e.g. RetinaFace without its weights or facexlib)."""
    from ..face import create_detector

    try:
        return create_detector(name=name, device=device, **opts), ""
    except Exception as exc:  # any construction failure only disables the landmark/identity metrics
        return None, f"face detector {name!r} could not be created ({exc})"


def dlib_model_dir() -> Path | None:
    """Folder of the .dat files shipped by face-recognition-models, or None when it is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


class DlibModels:
    """dlib's HOG detector, 5/68-point shape predictors and 128-d ResNet descriptor, each loaded on first use."""

    def __init__(self, folder: Path) -> None:
        import dlib

        self._dlib = dlib
        self._folder = folder

    @cached_property
    def _hog(self):
        return self._dlib.get_frontal_face_detector()

    @cached_property
    def _sp5(self):
        return self._dlib.shape_predictor(str(self._folder / "shape_predictor_5_face_landmarks.dat"))

    @cached_property
    def _sp68(self):
        return self._dlib.shape_predictor(str(self._folder / "shape_predictor_68_face_landmarks.dat"))

    @cached_property
    def _rec(self):
        return self._dlib.face_recognition_model_v1(str(self._folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def detect(self, rgb: np.ndarray, upsample: int) -> list[np.ndarray]:
        """HOG face boxes (x1,y1,x2,y2 float32), largest first."""
        rects = self._hog(np.ascontiguousarray(rgb), upsample)
        boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) for r in rects]
        return sorted(boxes, key=lambda b: -float((b[2] - b[0]) * (b[3] - b[1])))

    def _rect(self, box: np.ndarray):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        return self._dlib.rectangle(x1, y1, x2, y2)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 landmarks inside `box`."""
        shape = self._sp68(np.ascontiguousarray(rgb), self._rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """128-d identity descriptor of the face in `box` (dlib aligns the chip from its own 5 points)."""
        img = np.ascontiguousarray(rgb)
        shape = self._sp5(img, self._rect(box))
        return np.asarray(self._rec.compute_face_descriptor(img, shape), dtype=np.float64)


def load_dlib() -> tuple[DlibModels | None, str]:
    """dlib models or None and a one-line hint on how to get them."""
    hint = "install the identity extra: pip install 'vs-keep[identity]' (dlib-bin + face-recognition-models)"
    try:
        import dlib  # noqa: F401
    except ImportError:
        return None, f"dlib not installed; {hint}"
    folder = dlib_model_dir()
    if folder is None:
        return None, f"face-recognition-models not installed; {hint}"
    return DlibModels(folder), ""


def five_from_68(points: np.ndarray) -> np.ndarray:
    """RetinaFace-order 5 points from dlib's 68 (eye centres, nose tip, mouth corners)."""
    return np.stack([
        points[_LEFT_EYE].mean(axis=0), points[_RIGHT_EYE].mean(axis=0),
        points[_NOSE], points[_MOUTH_L], points[_MOUTH_R],
    ]).astype(np.float32)


class FaceFinder:
    """Finds the (largest) face of a reference frame with whatever is available: our detector, then dlib HOG.

    With a `retune` factory, the detector is rebuilt after the first face is found so that it only searches faces
    at least half that size: MTCNN's image pyramid then skips its many small scales (several times faster on
    face-crop clips), while a face that shrinks by more than half is reported as missing, never mislocated."""

    def __init__(self, detector: object | None, dlib_models: DlibModels | None, *, retune=None) -> None:
        self.detector = detector
        self.dlib = dlib_models
        self._retune = retune
        self.min_face: float | None = None

    @property
    def available(self) -> bool:
        return self.detector is not None or self.dlib is not None

    def find(self, rgb: np.ndarray) -> FaceRef | None:
        if self.detector is not None:
            det = max(self.detector.detect(rgb), key=lambda d: d.area, default=None)  # KEEP keeps the largest
            if det is not None:
                box = np.asarray(det.box, np.float32)
                if self._retune is not None:
                    side = float(min(box[2] - box[0], box[3] - box[1]))
                    self.min_face = max(12.0, 0.5 * side)
                    self.detector = self._retune(self.min_face)
                    self._retune = None
                return FaceRef(box=box, landmarks=np.asarray(det.landmarks, np.float32))
        if self.dlib is not None:
            boxes = self.dlib.detect(rgb, 0) or self.dlib.detect(rgb, 1)
            if boxes:
                return FaceRef(box=boxes[0], landmarks=five_from_68(self.dlib.landmarks(rgb, boxes[0])), source="dlib")
        return None
