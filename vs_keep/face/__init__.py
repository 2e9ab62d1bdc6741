"""Face pipeline: detection, tracks, landmark smoothing, alignment, paste-back, and the streaming `FacePipeline`.

Stateless stages (usable one frame / one chunk at a time by a random-access filter):
  create_detector / detect_faces     per-frame detections (MTCNN bundled; RetinaFace with user weights)
  chunk_window / plan_chunk          tracks + official landmark smoothing for one chunk from nearby detections
  alignment_matrix / align_face      FFHQ-template similarity and (anti-aliased) crop
  restore_segment                    one track's chunk through a restorer
  paste_faces / paste_layer          official soft-mask paste-back of all faces of a frame (or as colour + alpha)
"""

from __future__ import annotations

from .align import FFHQ_TEMPLATE_512, align_face, alignment_matrix, estimate_similarity, face_template
from .detect import create_detector, detect_faces
from .paste import FaceLayer, FacePaste, paste_faces, paste_layer
from .pipeline import FacePipeline, FrameResult, restore_segment
from .plan import Segment, chunk_bounds, chunk_window, plan_chunk
from .restorers import ModuleRestorer, identity_restorer, restorer_factory
from .smooth import StreamingSmoother, smooth_at
from .types import Detection, Detector, PlacedFace

__all__ = [
    "FFHQ_TEMPLATE_512",
    "Detection",
    "Detector",
    "FaceLayer",
    "FacePaste",
    "FacePipeline",
    "FrameResult",
    "ModuleRestorer",
    "PlacedFace",
    "Segment",
    "StreamingSmoother",
    "align_face",
    "alignment_matrix",
    "chunk_bounds",
    "chunk_window",
    "create_detector",
    "detect_faces",
    "estimate_similarity",
    "face_template",
    "identity_restorer",
    "paste_faces",
    "paste_layer",
    "plan_chunk",
    "restore_segment",
    "restorer_factory",
    "smooth_at",
]
