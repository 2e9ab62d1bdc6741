"""Face location for the identity and landmark metrics: our detector (5 points) and dlib's models (optional extra).

Both are optional at run time: each loader returns None plus a one-line reason, so a report can skip a metric
instead of failing. dlib's model files come from the `face-recognition-models` package, found without importing
it (its __init__ needs pkg_resources, gone from setuptools >= 81).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DlibModels", "FaceFinder", "FaceRef", "create_detector_or_none", "dlib_model_dir", "five_from_68", "iou",
    "largest", "load_dlib",
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


def create_detector_or_none(name: str = "mtcnn", device: str = "cpu", **opts: object) -> tuple[object | None, str]:
    """Our face detector, or None and why not (missing module, missing weights)."""
    try:
        from ..face import create_detector
    except ImportError as exc:
        return None, f"face detector unavailable (vs_keep.face: {exc})"
    try:
        return create_detector(name=name, device=device, **opts), ""
    except Exception as exc:  # any construction failure only disables the landmark/identity metrics
        return None, f"face detector {name!r} could not be created ({exc})"


def largest(detections: list) -> object | None:
    """The detection with the largest box area (KEEP keeps only the largest face)."""
    if not detections:
        return None
    return max(detections, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1,y1,x2,y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def dlib_model_dir() -> Path | None:
    """Folder of the .dat files shipped by face-recognition-models, or None when it is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


class DlibModels:
    """dlib's HOG detector, 5/68-point shape predictors and 128-d ResNet descriptor, loaded lazily."""

    def __init__(self, folder: Path) -> None:
        import dlib

        self._dlib = dlib
        self._folder = folder
        self._cache: dict[str, object] = {}

    def _get(self, key: str):
        if key not in self._cache:
            dlib = self._dlib
            files = {
                "hog": None,
                "sp5": "shape_predictor_5_face_landmarks.dat",
                "sp68": "shape_predictor_68_face_landmarks.dat",
                "rec": "dlib_face_recognition_resnet_model_v1.dat",
            }
            if key == "hog":
                self._cache[key] = dlib.get_frontal_face_detector()
            elif key == "rec":
                self._cache[key] = dlib.face_recognition_model_v1(str(self._folder / files[key]))
            else:
                self._cache[key] = dlib.shape_predictor(str(self._folder / files[key]))
        return self._cache[key]

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[np.ndarray]:
        """HOG face boxes (x1,y1,x2,y2 float32), largest first."""
        rects = self._get("hog")(np.ascontiguousarray(rgb), upsample)
        boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) for r in rects]
        return sorted(boxes, key=lambda b: -float((b[2] - b[0]) * (b[3] - b[1])))

    def _rect(self, box: np.ndarray):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        return self._dlib.rectangle(x1, y1, x2, y2)

    def shape(self, rgb: np.ndarray, box: np.ndarray, points: int = 68):
        """dlib full_object_detection of `points` (5 or 68) landmarks inside `box`."""
        return self._get("sp68" if points == 68 else "sp5")(np.ascontiguousarray(rgb), self._rect(box))

    @staticmethod
    def to_array(shape) -> np.ndarray:
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray, points: int = 68) -> np.ndarray:
        """(points, 2) float32 landmarks inside `box`."""
        return self.to_array(self.shape(rgb, box, points))

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """128-d identity descriptor of the face in `box` (dlib aligns the chip from its own 5 points)."""
        img = np.ascontiguousarray(rgb)
        shape = self.shape(img, box, 5)
        return np.asarray(self._get("rec").compute_face_descriptor(img, shape), dtype=np.float64)


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
            det = largest(self.detector.detect(rgb))
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
                lm68 = self.dlib.landmarks(rgb, boxes[0], 68)
                return FaceRef(box=boxes[0], landmarks=five_from_68(lm68), source="dlib")
        return None
