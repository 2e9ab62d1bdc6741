"""One pass over a reference/restored pair computing every available metric, then JSON and plots.

The pass is streaming: one frame of each video (and of the optional degraded input) is held at a time. What is
kept grows only with the number of frames: per-frame metric values and one pixel column per frame for the
flicker plot. Metrics whose models are missing are skipped with a one-line reason in `info.skipped`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from . import metrics
from .faces import FaceFinder, FaceRef, create_detector_or_none, load_dlib
from .identity import ArcFaceOnnx, IdentityMetric
from .landmarks import AkdMetric
from .lpips import load_lpips
from .temporal import WarpingError

__all__ = ["EvalOptions", "EvalResult", "SUMMARY_KEYS", "evaluate", "write_json"]

log = logging.getLogger(__name__)

#: the means every report has (None when not measured), in the order the CLI prints them
SUMMARY_KEYS = ("psnr", "ssim", "lpips", "ids", "sigma_ids", "akd", "sigma_akd", "ewarp", "ewarp_reference")
#: per-frame key of each clip's warping error
_EWARP_KEYS = {"restored": "ewarp", "reference": "ewarp_reference", "input": "ewarp_input"}


@dataclass
class EvalOptions:
    """What to compute; defaults give everything that needs no user-supplied weights."""

    y_channel: bool = False
    crop_border: int = 0
    lpips_weights: list[str] | None = None
    arcface: str | None = None
    arcface_bgr: bool = False
    identity: bool = True
    landmarks: str = "auto"  # auto | 5 | 68 | none
    temporal: bool = True
    detector: str = "mtcnn"
    min_face: float | None = None  # smallest face side (px) the detector searches; larger is faster
    device: str = "cpu"
    max_frames: int | None = None
    flicker_column: int | None = None
    progress: bool = True


@dataclass
class EvalResult:
    """Per-frame values, their summary, and the flicker columns for the plots."""

    frames: int = 0
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    column_x: int = 0
    column_rows: tuple[int, int] = (0, 0)
    thumbnail: np.ndarray | None = None

    def mean(self) -> dict[str, float | None]:
        """Means (NaN frames ignored) and the temporal standard deviations sigma_ids / sigma_akd."""
        out = {key: _finite_stat(values, np.mean) for key, values in self.per_frame.items()}
        for src, dst in (("ids", "sigma_ids"), ("akd", "sigma_akd")):
            out[dst] = _finite_stat(self.per_frame[src], np.std) if src in self.per_frame else None
        for key in SUMMARY_KEYS:
            out.setdefault(key, None)
        return out

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "mean": self.mean(),
            "per_frame": {k: [_json_float(v) for v in vals] for k, vals in self.per_frame.items()},
            "info": self.info,
        }


def _json_float(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _finite_stat(values: list[float], reduce) -> float | None:
    """`reduce` (np.mean, np.std) over the finite values: NaN marks a frame where a face metric found no face."""
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    return _json_float(float(reduce(arr))) if arr.size else None


def _column(frame: np.ndarray, x: int) -> np.ndarray:
    return frame[:, min(max(x, 0), frame.shape[1] - 1)].copy()


class _Pipeline:
    """Builds the metric objects the options and installed packages allow, recording what was skipped."""

    def __init__(self, opts: EvalOptions) -> None:
        self.skipped: dict[str, str] = {}
        self.lpips, reason = load_lpips(opts.lpips_weights, device=opts.device)
        if self.lpips is None:
            self.skipped["lpips"] = reason
        want_faces = opts.identity or opts.landmarks != "none"
        detector, dlib_models = None, None
        if want_faces:
            det_opts = {"min_face_size": opts.min_face} if opts.min_face else {}
            detector, det_reason = create_detector_or_none(opts.detector, opts.device, **det_opts)
            dlib_models, dlib_reason = load_dlib()
        retune = None
        if detector is not None and opts.detector == "mtcnn" and opts.min_face is None:
            def retune(min_face: float) -> object:
                return create_detector_or_none(opts.detector, opts.device, min_face_size=min_face)[0] or detector
        self.finder = FaceFinder(detector, dlib_models, retune=retune)
        self.identity: IdentityMetric | None = None
        if opts.identity:
            arcface = ArcFaceOnnx(opts.arcface, bgr=opts.arcface_bgr) if opts.arcface else None
            if arcface is None and dlib_models is None:
                self.skipped["ids"] = f"identity skipped: {dlib_reason}, or pass --arcface MODEL.onnx"
            elif not self.finder.available:
                raise InputError(f"--arcface needs face landmarks but no detector works: {det_reason}; {dlib_reason}")
            else:
                self.identity = IdentityMetric(arcface=arcface, dlib_models=dlib_models)
        self.akd: AkdMetric | None = None
        mode = opts.landmarks
        if mode == "auto":
            mode = "5" if detector is not None else ("68" if dlib_models is not None else "none")
            if mode == "none":
                self.skipped["akd"] = f"AKD skipped: {det_reason}; {dlib_reason}"
        if mode == "5":
            if detector is None:
                raise InputError(f"--landmarks 5 needs the face detector: {det_reason}")
            self.akd = AkdMetric(points=5, finder=self.finder)
        elif mode == "68":
            if dlib_models is None:
                raise InputError(f"--landmarks 68 needs dlib: {dlib_reason}")
            self.akd = AkdMetric(points=68, dlib_models=dlib_models)
        elif opts.landmarks == "none":
            self.skipped["akd"] = "AKD disabled (--landmarks none)"
        if not opts.identity:
            self.skipped["ids"] = "identity disabled (--no-identity)"
        if not opts.temporal:
            self.skipped["ewarp"] = "warping error disabled (--no-temporal)"
        for reason in self.skipped.values():
            log.debug("%s", reason)

    @property
    def needs_faces(self) -> bool:
        return self.identity is not None or self.akd is not None


def evaluate(reference: str | Path, restored: str | Path, *, degraded_input: str | Path | None = None,
             options: EvalOptions | None = None) -> EvalResult:
    """Compare `restored` with `reference` frame by frame (videos or image folders, frame-aligned)."""
    from tqdm import tqdm

    from ..video import iter_frames, probe

    opts = options or EvalOptions()
    info_ref, info_out = probe(reference), probe(restored)
    if (info_ref.width, info_ref.height) != (info_out.width, info_out.height):
        raise InputError(f"--restored is {info_out.width}x{info_out.height} but --reference is "
                         f"{info_ref.width}x{info_ref.height}: metrics need frame-aligned clips of one size")
    if info_ref.frames and info_out.frames and info_ref.frames != info_out.frames and opts.max_frames is None:
        raise InputError(f"--reference has {info_ref.frames} frames, --restored {info_out.frames}: pass "
                         f"--frames N to compare the first N only")
    pipe = _Pipeline(opts)
    result = EvalResult()
    result.per_frame = {name: [] for name in ["psnr", "ssim"] + (["lpips"] if pipe.lpips else [])}
    ref_iter = iter_frames(reference, max_frames=opts.max_frames)
    out_iter = iter_frames(restored, max_frames=opts.max_frames)
    in_iter = iter_frames(degraded_input, max_frames=opts.max_frames) if degraded_input else None
    total = opts.max_frames or info_ref.frames
    size = (info_ref.width, info_ref.height)
    bar = tqdm(total=total, desc="eval", unit="f", disable=not opts.progress, leave=False)
    first_face: FaceRef | None = None
    face_frames = 0
    clips = ["restored", "reference"] + (["input"] if in_iter is not None else [])
    result.columns = {name: [] for name in clips}
    warp = {name: WarpingError() for name in clips} if opts.temporal else {}
    for index, (ref, out) in enumerate(zip_longest(ref_iter, out_iter)):
        if ref is None or out is None:
            which = "--reference" if ref is None else "--restored"
            raise InputError(f"{which} ends at frame {index} before the other clip: pass --frames {index} to compare "
                             "the common part")
        if ref.shape != out.shape:
            raise InputError(f"frame {index}: --restored {out.shape[1]}x{out.shape[0]} vs --reference "
                             f"{ref.shape[1]}x{ref.shape[0]}")
        lq = next(in_iter, None) if in_iter is not None else None
        if lq is not None and lq.shape[1::-1] != size:
            lq = cv2.resize(lq, size, interpolation=cv2.INTER_CUBIC)
        a = metrics.prepare(ref, crop_border=opts.crop_border, y_channel=opts.y_channel)
        b = metrics.prepare(out, crop_border=opts.crop_border, y_channel=opts.y_channel)
        result.per_frame["psnr"].append(metrics.psnr(a, b))
        result.per_frame["ssim"].append(metrics.ssim(a, b))
        if pipe.lpips is not None:
            result.per_frame["lpips"].append(pipe.lpips(ref, out))
        face = pipe.finder.find(ref) if (pipe.needs_faces or index == 0) and pipe.finder.available else None
        face_frames += face is not None
        if index == 0:
            first_face = face
            result.column_x, result.column_rows = _pick_column(ref, face, opts.flicker_column)
            result.thumbnail = ref.copy()
        if pipe.identity is not None:
            pipe.identity.update(ref, out, face)
        if pipe.akd is not None:
            pipe.akd.update(ref, out, face)
        for name, frame in zip(clips, (out, ref, lq)):
            if frame is not None:  # the input clip may end first
                result.columns[name].append(_column(frame, result.column_x))
                if warp:
                    warp[name].update(frame)
        result.frames = index + 1
        bar.update(1)
    bar.close()
    if result.frames == 0:
        raise InputError(f"{reference}: no frames")
    if pipe.identity is not None:
        result.per_frame.update(pipe.identity.per_frame)
        result.per_frame["ids"] = list(pipe.identity.ids)
    if pipe.akd is not None:
        result.per_frame["akd"] = pipe.akd.values
    for name, metric in warp.items():
        if metric.values or name != "input":
            result.per_frame[_EWARP_KEYS[name]] = metric.values
    result.info = {
        "reference": str(reference),
        "restored": str(restored),
        "input": str(degraded_input) if degraded_input else None,
        "y_channel": opts.y_channel,
        "crop_border": opts.crop_border,
        "psnr": f"BasicSR definition on {'Y (BT.601)' if opts.y_channel else 'RGB'} 8-bit; capped at "
                f"{metrics.PSNR_CAP_DB:g} dB for identical frames",
        "ssim": "BasicSR definition: Gaussian window 11, sigma 1.5, per channel, averaged",
        "ids_backend": pipe.identity.backend if pipe.identity else None,
        "akd_landmarks": pipe.akd.label if pipe.akd else None,
        "ewarp": "masked warping error between consecutive frames (DIS flow, forward-backward occlusion "
                 "masks), mean squared [0,1] RGB difference x1000; ewarp_reference is the same for the reference",
        "sigma": "population standard deviation over frames of the per-frame value (paper reports sigma_ids x100)",
        "face_frames": face_frames if pipe.needs_faces else None,
        "detector_min_face": opts.min_face or pipe.finder.min_face,
        "akd_frames": int(np.isfinite(np.asarray(pipe.akd.values, np.float64)).sum()) if pipe.akd else None,
        "first_face_box": [round(float(v), 1) for v in first_face.box] if first_face is not None else None,
        "skipped": pipe.skipped,
    }
    return result


def _pick_column(ref: np.ndarray, face: FaceRef | None, column: int | None) -> tuple[int, tuple[int, int]]:
    """Column through the image-left eye of the first frame's face (where flicker shows, as in the paper's Fig. 5),
    rows spanning the face box; the frame centre and full height without a face."""
    h, w = ref.shape[:2]
    if face is not None:
        x = int(round(float(face.landmarks[0, 0]))) if column is None else column
        y1, y2 = float(face.box[1]), float(face.box[3])
        pad = 0.15 * (y2 - y1)
        rows = (max(0, int(y1 - pad)), min(h, int(math.ceil(y2 + pad))))
    else:
        x = w // 2 if column is None else column
        rows = (0, h)
    if not 0 <= x < w:
        raise InputError(f"--flicker-column {x} is outside the frame width {w}")
    return x, rows


def write_json(result: EvalResult, path: str | Path) -> Path:
    """Write the report JSON (keys: frames, mean, per_frame, info)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
