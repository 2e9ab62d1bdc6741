"""Average Keypoint Distance (AKD): mean pixel distance between landmarks of restored and reference frames.

Two landmark sets:
- "5": our detector run independently on both frames (the paper's "detected landmarks" protocol); permissive.
- "68": dlib's 68-point predictor (identity extra) run on both frames inside the reference face box. Its
  weights come from iBUG 300-W: fine for evaluation, not for commercial use.
Frames without a face in either image count as missing (NaN) and are reported, not silently dropped.
"""

from __future__ import annotations

import numpy as np

from ..face.boxes import iou_matrix
from .faces import DlibModels, FaceFinder, FaceRef

__all__ = ["AkdMetric"]


class AkdMetric:
    """Per-frame AKD with one landmark set: 5 points needs `finder` with a detector, 68 needs `dlib_models`."""

    def __init__(self, *, points: int, finder: FaceFinder | None = None, dlib_models: DlibModels | None = None) -> None:
        self.points = points
        self.finder = finder  # shares the finder's (possibly retuned) detector
        self.dlib = dlib_models
        self.values: list[float] = []

    @property
    def label(self) -> str:
        return "detector-5pt" if self.points == 5 else "dlib-68pt"

    def _five(self, rgb: np.ndarray, near: np.ndarray) -> np.ndarray | None:
        """The 5 points of the detection overlapping the box `near` most; None when no detection overlaps it."""
        dets = self.finder.detector.detect(rgb)
        if not dets:
            return None
        overlap = iou_matrix(np.stack([d.box for d in dets]), near)[:, 0]
        best = int(np.argmax(overlap))
        return dets[best].landmarks if overlap[best] > 0.0 else None

    def update(self, ref: np.ndarray, out: np.ndarray, face: FaceRef | None) -> None:
        value = float("nan")
        if face is not None:
            if self.points == 5:
                # The reference face was usually found by this same detector: reuse its points.
                lm_ref = face.landmarks if face.source == "detector" else self._five(ref, face.box)
                lm_out = self._five(out, face.box)
            else:
                lm_ref = self.dlib.landmarks(ref, face.box)
                lm_out = self.dlib.landmarks(out, face.box)
            if lm_ref is not None and lm_out is not None:
                value = float(np.mean(np.linalg.norm(lm_ref - lm_out, axis=1)))
        self.values.append(value)
