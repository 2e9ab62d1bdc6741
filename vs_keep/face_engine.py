"""`FaceEngine`: restore output frame n of a clip on demand, by composing the face stages over the
frames that `vs_keep.sequencer` says n needs. The VapourSynth filter wires these stages into a graph; `render`
composes them over a `FrameAccess` (the CLI's linear pass `vs_keep.stream.restore_stream`, shards, tests).

Stages (each a function of values, never of request order):
  detect(n, view)                      faces of one frame
  plan_block(base, detect, flag, N)    every chunk of the block [base, base + chunk): spans, tracks, smoothed
                                       landmarks (`vs_keep.block_plan`), from the detections of the block's window
  crop(view, face)                     one aligned face
  track_run(span, track, crop_of)      one track's lazy KEEP recurrence over its crops (`ClipRun`), primed with
                                       `overlap=`/`stabilize=` (`vs_keep.face.overlap`, `.face.stabilize`)
  restored_face(run, k)                step the recurrence to frame k (one model run at a time per device)
  paste_frame(...)                     tiny faces (DIC), parsing masks, paste-back (or the faces as colour + alpha)
Caches (detections, block plans, per-track recurrent state) only save work: a miss recomputes the same values.
Nothing here waits on work another thread has promised: concurrent misses compute twice and the first result
stored wins, so callers never block on each other except on plain locks held by a thread that is computing.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .block_plan import BlockPlan, ChunkPlan, FacePlan
from .concurrency import Counters, LRUCache, model_lock
from .errors import InputError
from .face import FacePaste, PlacedFace, align_face, alignment_matrix, detect_faces, paste_faces, paste_layer, plan_chunk
from .face.device import crops_to_clip, model_to_faces, to_frame_device, to_host
from .face.overlap import primed_segments
from .face.plan import check_restore_layout, check_tiny_min
from .face.restorers import ClipRun
from .face.stabilize import StabilizedRun
from .face.tiny import TinyFace, TinyFaceRestorer
from .face.track import LinkParams
from .face.types import Detection, Detector
from .sequencer import Sequencer, Span

__all__ = ["FrameAccess", "FaceEngine", "RenderedFrame"]

log = logging.getLogger(__name__)


class FrameAccess(Protocol):
    """Where input frames come from for `render` (a decoder for the CLI, a list in tests)."""

    num_frames: int

    def frame(self, n: int) -> np.ndarray:
        """RGB (H, W, 3), uint8 or float32 in [0, 1]."""
        ...

    def scene_start(self, n: int) -> bool:
        """True when frame n starts a new scene."""
        ...


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    image: np.ndarray
    faces: tuple[PlacedFace, ...]
    span: Span
    tiny: tuple[TinyFace, ...] = ()
    #: render(layer=True): `image` is the faces' colour layer and this their alpha (vs_keep.face.FaceLayer)
    alpha: np.ndarray | None = None


class FaceEngine:
    """Restore frame n of a clip on demand (see the module docstring for the exact semantics and the stages).

    restorer_factory: `vs_keep.face.restorer_factory(...)` (KEEP per chunk, or CodeFormer per frame). Other options
    as `vs_keep.engine.EngineOptions`. tiny: a `TinyFaceRestorer` (DIC); faces whose box side is in [tiny_min,
    min_face_size) then go through it per frame instead of being left alone. device: models on the same device
    share one lock (None: a lock of this engine's own). frame_device (`kernels.select.frame_device`; the CUDA
    device when the engine runs there): frames are copied there once (cached per frame index for a chunk plus its
    detection window) and detection, crops, the model and the paste-back work on that copy. overlap / stabilize:
    `vs_keep.face.overlap` and `vs_keep.face.stabilize` (0 = the official chunks).
    """

    def __init__(
        self,
        *,
        restorer_factory: Callable,
        detector: Detector,
        chunk: int = 20,
        scene_reset: bool = True,
        faces: str = "all",
        min_face_size: float = 20.0,
        max_gap: int = 10,
        upscale: int = 1,
        antialias: bool = True,
        exact: bool = False,
        parser: Callable | None = None,
        cache_chunks: int = 3,
        tiny: TinyFaceRestorer | None = None,
        tiny_min: float = 12.0,
        device: str | None = None,
        frame_device: torch.device | str | None = None,
        overlap: int = 0,
        stabilize: float = 0.0,
        max_face_size: float | None = None,
        select: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        check_restore_layout(faces, chunk, upscale)
        #: which frames each output frame needs (chunks, priming runs, detection windows)
        self.sequencer = Sequencer.of(chunk=chunk, overlap=overlap, stabilize=stabilize, scene_reset=scene_reset,
                                      max_gap=max_gap)
        self.stabilize = float(stabilize)
        self.restorer_factory = restorer_factory
        self.face_size = int(getattr(restorer_factory, "face_size", 512))
        self.detector = detector
        self.faces, self.min_face_size = faces, float(min_face_size)
        #: face selection beyond min_face: the largest box side, and the mask of frame m (`select(m)`) read by the
        #: FrameAccess path (`render`); the filter hands each frame's mask to `detect` itself
        self.max_face_size, self.select = max_face_size, select
        self.link = LinkParams(max_gap=self.sequencer.max_gap)
        self.ends = "reflect" if exact else "linear"  # track ends of the landmark smoothing: reflect is official
        self.upscale, self.antialias, self.exact = int(upscale), bool(antialias), bool(exact)
        self.parser = parser
        self.tiny, self.tiny_min = tiny, float(tiny_min)
        if tiny is not None:
            check_tiny_min(self.tiny_min, self.min_face_size)
        self._detections = LRUCache(512)  # many detection windows of a chunk
        self._plans = LRUCache(max(8, 2 * cache_chunks))
        self._runs = LRUCache(cache_chunks, weak=True)
        # Waiting on this lock cannot deadlock: it is only ever held by a thread that is running a model on inputs
        # it already has (no frame requests, no other locks taken inside except a ClipRun's own).
        self._model_lock = model_lock(device) if device is not None else threading.Lock()
        self.stats = Counters("model_steps", "chunks_planned", "detections", "crops")
        #: torch intra-op threads of every CPU op this engine runs, whichever thread calls it (`_pin_threads`)
        self.threads = torch.get_num_threads()
        self.frame_device = torch.device(frame_device) if frame_device is not None else None
        left, right = self.sequencer.block_reach()
        self._device_frames = LRUCache(left + 2 * self.sequencer.chunk + right)

    # -- stages -----------------------------------------------------------------------------------------------

    def _on_device(self, n: int, view: np.ndarray) -> np.ndarray | torch.Tensor:
        """Frame n where the engine works on it: `view` itself (numpy, the OpenCV path) or its one copy on the
        frame device, shared by detection, crops and paste-back."""
        if self.frame_device is None:
            return view
        hit = self._device_frames.get(n)
        if hit is None:
            hit = self._device_frames.put(n, to_frame_device(view, self.frame_device))
        return hit  # type: ignore[return-value]

    def _pin_threads(self) -> None:
        """Give the calling thread the engine's torch intra-op thread count. OpenMP keeps that count per OS thread:
        a VapourSynth worker first used while the script had another setting keeps it, CPU float32 results depend
        on it, and the recurrence turns such a difference into other codebook indices, so without this a frame
        would depend on which worker served it."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def detect(self, n: int, view: np.ndarray, select: np.ndarray | None = None) -> list[Detection]:
        """Faces of frame n (view: the frame as detection sees it: uint8, or float in [0, 1]), down
        to tiny_min when tiny faces are on, up to max_face_size, centred on non-zero samples of the `select` mask
        (frame n's). Cached by n."""
        hit = self._detections.get(n)
        if hit is not None:
            return hit  # type: ignore[return-value]
        self._pin_threads()
        self.stats.add("detections")
        low = self.tiny_min if self.tiny is not None else self.min_face_size
        found = detect_faces(self.detector, self._on_device(n, view), faces=self.faces, min_face_size=low,
                             max_face_size=self.max_face_size, select=select)
        return self._detections.put(n, found)  # type: ignore[return-value]

    def cached_detections(self, n: int) -> list[Detection] | None:
        return self._detections.get(n)  # type: ignore[return-value]

    def plan_block(
        self, base: int, detect: Callable[[int], list[Detection]], flag: Callable[[int], bool], num_frames: int
    ) -> BlockPlan:
        """Plan every chunk of block [base, base + chunk). detect(m) / flag(m) are asked only for frames of
        `sequencer.block_window(base)`; detect only inside the scene of the chunk that needs it. Cached by base."""
        hit = self.cached_block(base)
        if hit is not None:
            return hit
        spans = self.sequencer.spans(base, flag, num_frames)
        chunks = tuple(self._plan_chunk(s, detect, flag, num_frames) for s in spans)
        return self._plans.put(base, BlockPlan(base=base, chunks=chunks))  # type: ignore[return-value]

    def cached_block(self, base: int) -> BlockPlan | None:
        return self._plans.get(base)  # type: ignore[return-value]

    def _plan_chunk(
        self, span: Span, detect: Callable[[int], list[Detection]], flag: Callable[[int], bool], num_frames: int
    ) -> ChunkPlan:
        seq = self.sequencer
        run = seq.run_start(span, flag)
        lo, hi = seq.detection_window(span, run, num_frames)
        a, b = seq.scene_limits(span, lo, hi, flag)
        every = {m: (detect(m) if a <= m < b else []) for m in range(lo, hi)}
        dets = {m: [d for d in v if d.size >= self.min_face_size] for m, v in every.items()}
        segments = plan_chunk(dets, run, span.stop, length=num_frames, link=self.link, sigma=seq.sigma, ends=self.ends)
        faces: dict[int, list[FacePlan]] = {m: [] for m in range(run, span.stop)}
        for track, (seg, prime) in enumerate(primed_segments(segments, span.start)):
            first, length = int(seg.frames[0]), len(seg.frames)
            for k, f in enumerate(seg.frames):
                faces[int(f)].append(
                    FacePlan(track=track, frame=int(f), first=first, length=length,
                             landmarks=np.asarray(seg.landmarks[k], np.float64), detected=bool(seg.detected[k]),
                             prime=prime)
                )
        small = {}
        if self.tiny is not None:
            small = {m: tuple(d for d in every[m] if d.size < self.min_face_size) for m in range(span.start, span.stop)}
        self.stats.add("chunks_planned")
        return ChunkPlan(span=span, faces={m: tuple(v) for m, v in faces.items()}, small=small)

    def matrix(self, face: FacePlan) -> np.ndarray:
        """(2, 3) frame -> aligned-crop matrix of one face."""
        return alignment_matrix(face.landmarks, self.face_size, "lmeds" if self.exact else "lstsq")

    def crop(self, view: np.ndarray, face: FacePlan) -> np.ndarray | torch.Tensor:
        """The aligned (S, S, 3) float32 crop of one face from its frame (as detection sees it); a tensor on the
        frame device on the CUDA frame path."""
        self.stats.add("crops")
        frame = self._on_device(face.frame, view)
        return align_face(frame, self.matrix(face), self.face_size, antialias=self.antialias, exact=self.exact)

    def cached_runs(self, span: Span) -> LRUCache | None:
        """The runs of a chunk's tracks (track -> `ClipRun`), if cached."""
        return self._runs.get((span.start, span.stop))  # type: ignore[return-value]

    def track_run(
        self, span: Span, track: int, length: int, first: int, crop_of: Callable[[int], np.ndarray], prime: int = 0
    ) -> ClipRun | StabilizedRun:
        """The recurrent run of one track of a chunk: the cached one, else a new one over the crops of frames
        first .. first + length - 1 (`crop_of(m)`), the first `prime` of them before the chunk (priming), wrapped
        in the low-band stabilizer when it is on. Building a run does no model work."""
        key = (span.start, span.stop)
        runs: LRUCache = self._runs.get(key) or self._runs.put(key, LRUCache(None))  # type: ignore[assignment]
        run = runs.get(track)
        if run is not None:
            return run
        clip = crops_to_clip([crop_of(m) for m in range(first, first + length)])
        run: ClipRun | StabilizedRun = ClipRun(self.restorer_factory(track), clip, prime=prime)
        if self.stabilize > 0:
            run = StabilizedRun(run, self.stabilize)
        return runs.put(track, run)

    def restored_face(self, run: ClipRun | StabilizedRun, k: int) -> np.ndarray | torch.Tensor:
        """Frame k of a track's clip, restored: (S, S, 3) float32 in [0, 1] (on the frame device on the CUDA
        frame path)."""
        with self._model_lock:
            self._pin_threads()
            before = run.steps
            y = run.frame(k)
            done = run.steps - before
        self.stats.add("model_steps", done)
        if self.frame_device is not None:  # the stabilizer works on the host: its faces come back from there
            y = y.to(self.frame_device)
        return model_to_faces(y[None], exact=self.exact, on_device=self.frame_device is not None)[0]

    def paste_frame(
        self, n: int, view: np.ndarray, chunk: ChunkPlan, restored: Iterable[np.ndarray], layer: bool = False,
    ) -> RenderedFrame:
        """Output frame n: tiny faces (DIC) and the restored KEEP faces (in track order) pasted onto frame n
        (`view`, the frame as detection saw it). layer: the faces as colour + alpha instead
        (`paste_layer`, computed on the host: on the CUDA frame path the restored faces come back to the host,
        the frame itself is not needed)."""
        self._pin_threads()
        faces = chunk.faces.get(n, ())
        tiny = self._tiny_faces(n, view, chunk.small.get(n, ()))
        pastes = [t[0] for t in tiny]
        for face, img in zip(faces, restored, strict=True):
            mask = self.parser(to_host(img), exact=self.exact) if self.parser is not None else None
            pastes.append(FacePaste(img, self.matrix(face), mask))
        faces_placed, tiny_placed = tuple(f.placed for f in faces), tuple(t[1] for t in tiny)
        if layer:
            host = [FacePaste(to_host(p.image), p.matrix, None if p.parse_mask is None else to_host(p.parse_mask)) for p in pastes]
            fl = paste_layer(host, view.shape[:2], upscale=self.upscale, exact=self.exact, antialias=self.antialias)
            return RenderedFrame(image=fl.color, faces=faces_placed, span=chunk.span, tiny=tiny_placed, alpha=fl.alpha)
        image = paste_faces(self._on_device(n, view), pastes, upscale=self.upscale, exact=self.exact,
                            antialias=self.antialias)
        return RenderedFrame(image=to_host(image), faces=faces_placed, span=chunk.span, tiny=tiny_placed)

    def _tiny_faces(self, n: int, view: np.ndarray, small: tuple[Detection, ...]) -> list[tuple[FacePaste, TinyFace]]:
        if not small or self.tiny is None:
            return []
        with self._model_lock:
            return self.tiny.restore(view, list(small), n)

    # -- the stages over a FrameAccess (the linear pass, shards, tests) ------------------------------------------

    def render(self, n: int, access: FrameAccess, layer: bool = False) -> RenderedFrame:
        """Output frame n (input size x upscale, input dtype) and the faces pasted into it. layer: return the faces
        as colour + alpha instead (the caller composites them into the source in its own format)."""
        if not 0 <= n < access.num_frames:
            raise InputError(f"frame {n} outside the clip (0..{access.num_frames - 1})")
        block = self.plan_block(self.sequencer.block(n), functools.partial(self._detect_from, access=access), access.scene_start, access.num_frames)
        chunk = block.chunk_of(n)
        restored = []
        for face in chunk.faces.get(n, ()):
            crop_of = lambda m, t=face.track: self.crop(access.frame(m), chunk.faces[m][chunk.position(m, t)])  # noqa: E731
            run = self.track_run(chunk.span, face.track, face.length, face.first, crop_of, face.prime)
            restored.append(self.restored_face(run, face.index))
        view = access.frame(n)
        return self.paste_frame(n, view, chunk, restored, layer=layer)

    def _detect_from(self, m: int, access: FrameAccess) -> list[Detection]:
        """`detect` over a FrameAccess, reading the frame only on a cache miss (a linear pass has released the
        frames before the current run, whose detections the next block's window still asks for)."""
        hit = self.cached_detections(m)
        if hit is not None:
            return hit
        return self.detect(m, access.frame(m), None if self.select is None else self.select(m))

    def clear_caches(self) -> None:
        """Forget every cached detection, plan, recurrent state and device frame (what a new shard starts from)."""
        self._runs.clear()
        self._plans.clear()
        self._detections.clear()
        self._device_frames.clear()

    def close(self) -> None:
        """Drop caches and every model reference (restorer, detector, parser, DIC) so their memory can go."""
        self.clear_caches()
        self.restorer_factory = None  # type: ignore[assignment]
        self.detector = None  # type: ignore[assignment]
        self.parser = None
        self.tiny = None
