"""Timings of the face stages on CPU at 720p and 1080p: detection, tracking + smoothing, alignment, paste-back.

`face_stage_timings(height, width)` returns milliseconds per frame (fastest of `repeats`, after a warm-up) for a
frame holding two copies of a real face (scikit-image's astronaut) at a typical size for that resolution. The
restoration network is not included (see the engine benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..face import FacePaste, align_face, alignment_matrix, create_detector, paste_faces, plan_chunk
from ..face.types import Detection
from .common import bench_fn, round_sig

__all__ = ["bench_frame", "face_stage_timings", "faces_section"]


def _ms(fn: Callable[[], object], repeats: int) -> float:
    return round(1000 * bench_fn(fn, repeats), 2)


def bench_frame(height: int, width: int) -> np.ndarray:
    """A background with two real faces whose eye distance is ~4.5 % of the frame height (a medium shot)."""
    try:
        from skimage import data
    except ImportError as exc:  # scikit-image is in the [eval] extra
        raise RuntimeError("the face benchmark needs scikit-image (pip install 'vs-keep[eval]')") from exc
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(40, 200, (height, width, 3)).astype(np.uint8), (0, 0), 6)
    portrait = data.astronaut()[20:260, 110:340]  # eye distance ~43 px in this crop
    scale = 0.045 * height / 43.0
    face = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fh, fw = face.shape[:2]
    for x in (width // 4 - fw // 2, 3 * width // 4 - fw // 2):
        y = height // 2 - fh // 2
        frame[y : y + fh, x : x + fw] = face
    return frame


def face_stage_timings(height: int, width: int, *, repeats: int = 5, face_size: int = 512,
                       device: str = "cpu") -> dict[str, float | int]:
    """Milliseconds per frame for each face stage (two faces per frame)."""
    frame = bench_frame(height, width)
    out: dict[str, float | int] = {"height": height, "width": width, "faces": 0}
    for min_face in (20, 64):
        det = create_detector("mtcnn", device, min_face_size=min_face)
        faces: list[Detection] = det.detect(frame)
        out[f"detect_ms_min_face_{min_face}"] = _ms(lambda: det.detect(frame), repeats)
    out["faces"] = len(faces)
    if not faces:
        return out
    # tracking + smoothing: one chunk of 20 frames planned from its 61-frame window, per output frame
    dets = {f: [Detection(box=d.box + 0.3 * f, score=d.score, landmarks=d.landmarks + 0.3 * f) for d in faces] for f in range(71)}
    out["track_smooth_ms"] = round(_ms(lambda: plan_chunk(dets, 20, 40, length=71), repeats) / 20, 3)
    mats = [alignment_matrix(d.landmarks, face_size) for d in faces]
    out["align_ms"] = _ms(lambda: [align_face(frame, m, face_size) for m in mats], repeats)
    out["align_ms_exact"] = _ms(lambda: [align_face(frame, m, face_size, exact=True) for m in mats], repeats)
    # a close-up twice the crop size: the anti-aliasing prefilter runs
    big = [alignment_matrix((d.landmarks - d.landmarks.mean(0)) * (252 / 126 * 126 / max(np.linalg.norm(d.landmarks[1] - d.landmarks[0]), 1))
                            + d.landmarks.mean(0), face_size) for d in faces[:1]]
    out["align_ms_closeup_antialiased"] = _ms(lambda: [align_face(frame, m, face_size) for m in big], repeats)
    crops = [align_face(frame, m, face_size) for m in mats]
    pastes = [FacePaste(c, m) for c, m in zip(crops, mats)]
    out["paste_ms"] = _ms(lambda: paste_faces(frame, pastes), repeats)
    out["paste_ms_exact"] = _ms(lambda: paste_faces(frame, pastes, exact=True), repeats)
    out["paste_ms_upscale2"] = _ms(lambda: paste_faces(frame, pastes, upscale=2), repeats)
    return out


def faces_section(per_face_s: float | None, face_size: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Faces section of the bench: 720p/1080p face stages (two faces per frame), scaled to 1 and 3 faces, plus the
    restoration time per face of the shipped setting -> end-to-end fps estimates."""
    out: dict[str, Any] = {"method": "face stages measured with 2 faces per frame, scaled per face; restore = shipped setting"}
    for h, w in ((720, 1280), (1080, 1920)):
        st = face_stage_timings(h, w, repeats=repeats, face_size=face_size, device=device)
        n = max(int(st.get("faces", 0)), 1)
        fixed_ms = float(st.get("detect_ms_min_face_20", 0.0)) + float(st.get("track_smooth_ms", 0.0))
        per_face_ms = (float(st.get("align_ms", 0.0)) + float(st.get("paste_ms", 0.0))) / n
        entry: dict[str, Any] = {"stages_ms": st}
        for faces in (1, 3):
            total_ms = fixed_ms + faces * per_face_ms + (faces * per_face_s * 1000 if per_face_s else 0.0)
            entry[f"fps_{faces}_face{'s' if faces > 1 else ''}"] = round_sig(1000.0 / total_ms) if total_ms > 0 else None
        out[f"{h}p"] = entry
    return out
