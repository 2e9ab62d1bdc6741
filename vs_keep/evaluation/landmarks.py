"""Average Keypoint Distance (AKD): mean pixel distance between landmarks of restored and reference frames.

Two landmark sets:
- "5": our detector run independently on both frames (the paper's "detected landmarks" protocol); permissive.
- "68": dlib's 68-point predictor (identity extra) run on both frames inside the reference face box. Its
  weights come from iBUG 300-W: fine for evaluation, not for commercial use.
Frames without a face in either image count as missing (NaN) and are reported, not silently dropped.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .faces import DlibModels, FaceFinder, FaceRef, iou

__all__ = ["AkdMetric"]


class AkdMetric:
    """Per-frame AKD with one landmark set."""

    def __init__(self, *, points: int, finder: FaceFinder | None = None, dlib_models: DlibModels | None = None) -> None:
        if points == 5 and (finder is None or finder.detector is None):
            raise InputError("AkdMetric: points=5 needs the face detector (finder with a detector)")
        if points == 68 and dlib_models is None:
            raise InputError("AkdMetric: points=68 needs dlib (dlib_models)")
        self.points = points
        self.finder = finder  # shares the finder's (possibly retuned) detector
        self.dlib = dlib_models
        self.values: list[float] = []

    @property
    def label(self) -> str:
        return "detector-5pt" if self.points == 5 else "dlib-68pt"

    def _five(self, rgb: np.ndarray, near: np.ndarray | None) -> np.ndarray | None:
        dets = self.finder.detector.detect(rgb)
        if not dets:
            return None
        if near is None:
            best = max(dets, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
        else:
            best = max(dets, key=lambda d: iou(np.asarray(d.box), near))
            if iou(np.asarray(best.box), near) <= 0.0:
                return None
        return np.asarray(best.landmarks, np.float32)

    def update(self, ref: np.ndarray, out: np.ndarray, face: FaceRef | None) -> float:
        value = float("nan")
        if face is not None:
            if self.points == 5:
                # The reference face was usually found by this same detector: reuse its points.
                lm_ref = face.landmarks if face.source == "detector" else self._five(ref, face.box)
                lm_out = self._five(out, face.box)
            else:
                lm_ref = self.dlib.landmarks(ref, face.box, 68)
                lm_out = self.dlib.landmarks(out, face.box, 68)
            if lm_ref is not None and lm_out is not None:
                value = float(np.mean(np.linalg.norm(lm_ref - lm_out, axis=1)))
        self.values.append(value)
        return value
