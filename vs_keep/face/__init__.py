"""Face stages: detection, tracks, landmark smoothing, alignment, paste-back, restorer adapters.

Stateless stages, composed per chunk by the one face engine `vs_keep.face_engine.FaceEngine` (the
VapourSynth filter uses it directly, the CLI through its linear pass `restore_stream`):
  create_detector / detect_faces     per-frame detections (MTCNN bundled; RetinaFace with user weights)
  chunk_window / plan_chunk          tracks + official landmark smoothing for one chunk from nearby detections
  alignment_matrix / align_face      FFHQ-template similarity and (anti-aliased) crop
  restorer_factory / ClipRun         one track's chunk through KEEP (lazily, step by step) or CodeFormer
  paste_faces / paste_layer          official soft-mask paste-back of all faces of a frame (or as colour + alpha)
"""

from __future__ import annotations

from .align import FFHQ_TEMPLATE_512, align_face, alignment_matrix, estimate_similarity, face_template
from .detect import create_detector, detect_faces
from .paste import FaceLayer, FacePaste, paste_faces, paste_layer
from .plan import Segment, chunk_window, plan_chunk
from .restorers import ModuleRestorer, identity_restorer, restorer_factory
from .smooth import smooth_at
from .types import Detection, Detector, PlacedFace

__all__ = [
    "FFHQ_TEMPLATE_512",
    "Detection",
    "Detector",
    "FaceLayer",
    "FacePaste",
    "ModuleRestorer",
    "PlacedFace",
    "Segment",
    "align_face",
    "alignment_matrix",
    "chunk_window",
    "create_detector",
    "detect_faces",
    "estimate_similarity",
    "face_template",
    "identity_restorer",
    "paste_faces",
    "paste_layer",
    "plan_chunk",
    "restorer_factory",
    "smooth_at",
]
