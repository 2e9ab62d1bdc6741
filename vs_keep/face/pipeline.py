"""Streaming face restoration of a video: frames in, in order, restored frames out, in order.

Built from the pure stages so a random-access filter can compute the same frames:
  detect_faces(frame n)                      -> detections of frame n
  plan_chunk(detections of chunk_window(c))  -> segments (one per track) of chunk c with smoothed landmarks
  restore_segment(frames, segment)           -> restored faces and their alignment matrices
  paste_faces(frame n, faces of frame n)     -> output frame n
The pipeline detects each frame as it arrives, plans a chunk as soon as the detections its window needs are in,
restores it and emits its frames. It holds at most chunk + 20 + max_gap + 1 input frames, whatever the video
length.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..kernels.select import frame_device
from .align import alignment_matrix, align_face
from .detect import create_detector, detect_faces
from .device import crops_to_clip, model_to_faces, to_frame_device, to_host
from .paste import FacePaste, paste_faces
from .plan import Segment, TrackIds, check_restore_layout, chunk_window, plan_chunk, resolve_smoothing_ends
from .restorers import Restorer, restorer_factory as make_restorer_factory
from .smooth import SIGMA
from .track import LinkParams
from .types import Detection, Detector, PlacedFace

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One output frame and the faces pasted into it (track id, smoothed landmarks, detected or filled)."""

    index: int
    image: np.ndarray
    faces: tuple[PlacedFace, ...]
    #: (H·u, W·u) float32 weight of the pasted faces when the pipeline was built with_alpha=True, else None
    alpha: np.ndarray | None = None


def restore_segment(
    frames: Callable[[int], np.ndarray] | dict[int, np.ndarray],
    segment: Segment,
    restorer: Restorer,
    *,
    face_size: int,
    antialias: bool = True,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Align one segment's faces, run the restorer on them as one clip and return (faces (T, S, S, 3) float32 RGB
    in [0, 1], matrices (T, 2, 3) frame -> crop). Tensor frames (the CUDA frame path) give tensor faces there."""
    get = frames.__getitem__ if isinstance(frames, dict) else frames
    method = "lmeds" if exact else "lstsq"
    mats = np.stack([alignment_matrix(lm, face_size, method) for lm in segment.landmarks])
    crops = [align_face(get(int(f)), m, face_size, antialias=antialias, exact=exact) for f, m in zip(segment.frames, mats)]
    x = crops_to_clip(crops)  # on the frames' device: the GPU on the CUDA frame path
    y = restorer(x)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
        raise InputError(f"restorer returned {getattr(y, 'shape', type(y).__name__)}, expected a tensor of shape {tuple(x.shape)}")
    return model_to_faces(y.to(x.device), exact=exact, on_device=isinstance(crops[0], torch.Tensor)), mats  # type: ignore[return-value]


class FacePipeline:
    """Restore every face (or the largest / most central one) of a video, streaming.

    restorer_factory: callable(track_id) -> restorer (see `restorers`); default: `model` ("keep" = the cached
    KEEP weights, a path, or a loaded module; fidelity is CodeFormer's w when the model is CodeFormer). detector: name for `create_detector` or a Detector. chunk: frames
    per restorer clip (boundaries at multiples of chunk, state reset at each). faces: "all" | "largest" |
    "center". max_gap: missed detections bridged by interpolation before a track ends. upscale: output size
    factor; background: "bilinear" or "realesrgan" (background_weights = RealESRGAN_x2plus.pth). parse: use the
    ParseNet mask (True = cached parsing_parsenet.pth, or a path). antialias: prefilter faces larger than the
    crop. exact: official arithmetic in alignment and paste-back (LMEDS, plain bilinear, uint8 quantisation,
    truncation) for comparisons.
    """

    def __init__(
        self,
        *,
        restorer_factory: Callable[[int], Restorer] | None = None,
        model: str | os.PathLike[str] | torch.nn.Module = "keep",
        detector: str | Detector = "mtcnn",
        detector_options: dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        fidelity: float = 0.5,
        face_size: int | None = None,
        chunk: int = 20,
        faces: str = "all",
        min_face_size: float = 20.0,
        max_gap: int = 10,
        sigma: float = SIGMA,
        smoothing_ends: str | None = None,
        upscale: int = 1,
        background: str = "bilinear",
        background_weights: str | os.PathLike[str] | None = None,
        parse: bool | str | os.PathLike[str] = False,
        antialias: bool = True,
        exact: bool = False,
        with_alpha: bool = False,
    ) -> None:
        check_restore_layout(faces, chunk, upscale)
        if background not in ("bilinear", "realesrgan"):
            raise InputError(f"background must be 'bilinear' or 'realesrgan', got {background!r}")
        if restorer_factory is None:
            restorer_factory = make_restorer_factory(model, device=device, dtype=dtype, fidelity=fidelity)
        self.restorer_factory = restorer_factory
        self.face_size = int(face_size or getattr(restorer_factory, "face_size", 512))
        if isinstance(detector, str):
            options = dict(detector_options or {})
            if detector == "mtcnn":  # no need to search the pyramid for faces the pipeline will drop anyway
                options.setdefault("min_face_size", max(12.0, float(min_face_size)))
            detector = create_detector(detector, device, **options)
        self.detector = detector
        self.chunk, self.faces, self.min_face_size = int(chunk), faces, float(min_face_size)
        self.link = LinkParams(max_gap=int(max_gap))
        self.sigma = float(sigma)
        self.ends = resolve_smoothing_ends(smoothing_ends, exact)
        self.upscale, self.antialias, self.exact = int(upscale), bool(antialias), bool(exact)
        self.with_alpha = bool(with_alpha)
        #: where frames live while they wait for their chunk (None: numpy, the OpenCV path; CUDA: on the GPU)
        self.frame_device = frame_device(device)
        self.background = None
        if background == "realesrgan":
            from .upsample import RealESRGANUpsampler

            self.background = RealESRGANUpsampler(weights=background_weights, device=device)
        self.parser = None
        if parse:
            from .facexlib_backend import ParseNetMasker

            self.parser = ParseNetMasker(weights=None if parse is True else parse, device=device)
        self._reset()

    def _reset(self) -> None:
        self._frames: dict[int, np.ndarray | torch.Tensor] = {}
        self._dets: dict[int, list[Detection]] = {}
        self._pending: dict[int, list[tuple[FacePaste, PlacedFace]]] = {}
        self._restorers: dict[int, Restorer] = {}
        self._ids = TrackIds()
        self._count = 0
        self._next_chunk = 0
        self._shape: tuple[int, ...] | None = None

    # -- public API -------------------------------------------------------------------------------------------

    def push(self, frame: np.ndarray) -> list[FrameResult]:
        """Add the next frame; returns the frames that became final (possibly none)."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or not (frame.dtype == np.uint8 or np.issubdtype(frame.dtype, np.floating)):
            raise InputError(f"FacePipeline: frames must be HxWx3 RGB uint8 or float arrays, got {frame.dtype} {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise InputError(f"FacePipeline: frame {self._count} is {frame.shape}, earlier frames were {self._shape}")
        n = self._count
        # a copy (decoders may reuse their buffer); on the CUDA frame path the one transfer in
        stored = frame.copy() if self.frame_device is None else to_frame_device(frame, self.frame_device)
        self._frames[n] = stored
        self._dets[n] = detect_faces(self.detector, stored, faces=self.faces, min_face_size=self.min_face_size)
        self._count += 1
        return self._advance(final=False)

    def flush(self) -> list[FrameResult]:
        """End of the video: restore and return every remaining frame, then reset for a new video."""
        out = self._advance(final=True)
        self._reset()
        return out

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[FrameResult]:
        """Results for a whole sequence of frames, in order."""
        for frame in frames:
            yield from self.push(frame)
        yield from self.flush()

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Restored images for a whole sequence of frames, in order."""
        for result in self.run(frames):
            yield result.image

    @property
    def buffered_frames(self) -> int:
        """Input frames currently held (bounded by chunk + smoothing radius + max_gap + 1)."""
        return len(self._frames)

    # -- internals --------------------------------------------------------------------------------------------

    def _advance(self, final: bool) -> list[FrameResult]:
        results: list[FrameResult] = []
        while self._next_chunk < self._count:
            start, stop = self._next_chunk, self._next_chunk + self.chunk
            _, need = chunk_window(start, stop, max_gap=self.link.max_gap, sigma=self.sigma)
            if not final and need > self._count:
                break
            segments = plan_chunk(
                self._dets, start, stop, length=self._count if final else None, link=self.link, sigma=self.sigma, ends=self.ends
            )
            next_lo, _ = chunk_window(stop, stop + self.chunk, max_gap=self.link.max_gap, sigma=self.sigma)
            ids = self._ids.assign(segments, forget_before=next_lo)
            log.debug("frames %d-%d: %d face track(s) %s", start, min(stop, self._count) - 1, len(segments), list(ids))
            self._restore(segments, ids)
            for n in range(start, min(stop, self._count)):
                results.append(self._emit(n))
            self._next_chunk = stop
            for f in [f for f in self._dets if f < next_lo]:
                del self._dets[f]
        return results

    def _restore(self, segments: Sequence[Segment], ids: Sequence[int]) -> None:
        for tid in [t for t in self._restorers if t not in ids]:  # tracks that ended
            del self._restorers[tid]
        for seg, tid in zip(segments, ids):
            if tid not in self._restorers:
                self._restorers[tid] = self.restorer_factory(tid)
            faces, mats = restore_segment(
                self._frames, seg, self._restorers[tid], face_size=self.face_size, antialias=self.antialias, exact=self.exact
            )
            for k, f in enumerate(seg.frames):
                mask = None
                if self.parser is not None:
                    face = faces[k].cpu().numpy() if isinstance(faces[k], torch.Tensor) else faces[k]
                    mask = self.parser(face, exact=self.exact)
                placed = PlacedFace(track=tid, frame=int(f), landmarks=seg.landmarks[k], detected=bool(seg.detected[k]))
                self._pending.setdefault(int(f), []).append((FacePaste(faces[k], mats[k], mask), placed))

    def _emit(self, n: int) -> FrameResult:
        frame = self._frames.pop(n)
        entries = self._pending.pop(n, [])
        pasted = paste_faces(
            frame, [e[0] for e in entries], upscale=self.upscale, exact=self.exact, antialias=self.antialias,
            background=self.background, return_alpha=self.with_alpha,
        )
        image, alpha = pasted if self.with_alpha else (pasted, None)
        image = to_host(image)  # the one transfer out (no-op for numpy frames)
        alpha = to_host(alpha) if alpha is not None else None
        return FrameResult(index=n, image=image, faces=tuple(e[1] for e in entries), alpha=alpha)
