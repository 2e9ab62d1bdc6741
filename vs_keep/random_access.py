"""Face restoration with random access by frame index: what the VapourSynth filter runs.

Output frame n is a pure function of the input frames of n's chunk and of the detections around it:
- chunk of n = [start, stop): start is the last multiple of `chunk` at or before n, or the last scene start
  (`_SceneChangePrev`) after it; stop is the next multiple, the next scene start or the end of the clip;
- detections come from the window `chunk_window(start, stop)` (±20 frames of landmark smoothing plus gap
  bridging), cut at scene changes so that tracks and smoothing never cross a cut;
- every track of the chunk is restored as one clip (KEEP's state resets at the chunk start), then each frame's
  faces are pasted back.
At default settings this is exactly the official script's chunking. Because nothing depends on the request order,
seeks, parallel and repeated requests give the same frames as a linear pass; caches only save work. A request
restores at most one chunk of faces, once: concurrent requests for the same chunk wait for the first.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import InputError
import torch

from .face import FacePaste, PlacedFace, align_face, alignment_matrix, chunk_window, detect_faces, paste_faces, paste_layer, plan_chunk
from .face.plan import check_restore_layout, resolve_smoothing_ends
from .face.restorers import ClipRun
from .face.smooth import SIGMA
from .face.tiny import TinyFace, TinyFaceRestorer, box_side
from .face.track import LinkParams
from .face.types import Detection, Detector

log = logging.getLogger(__name__)


class FrameAccess(Protocol):
    """Where input frames come from (the VapourSynth filter reads them from the upstream clip)."""

    num_frames: int

    def frame(self, n: int) -> np.ndarray:
        """RGB (H, W, 3), uint8 or float32 in [0, 1]."""
        ...

    def scene_start(self, n: int) -> bool:
        """True when frame n starts a new scene."""
        ...


@dataclass(frozen=True)
class Span:
    start: int
    stop: int


@dataclass(frozen=True, eq=False)
class ChunkFaces:
    """One planned chunk: per frame, (track clip run, index in the clip, alignment matrix, placement); tiny-face
    detections per frame and their DIC results once computed."""

    span: Span
    per_frame: dict[int, list[tuple[ClipRun, int, np.ndarray, PlacedFace]]]
    small: dict[int, list[Detection]]
    tiny: "_LRU" = field(default_factory=lambda: _LRU(1 << 30))


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    image: np.ndarray
    faces: tuple[PlacedFace, ...]
    span: Span
    tiny: tuple[TinyFace, ...] = ()
    #: render(layer=True): `image` is the faces' colour layer and this their alpha (vs_keep.face.FaceLayer)
    alpha: np.ndarray | None = None


class _LRU:
    """Small thread-safe LRU of single-flight futures: the first caller computes, later callers wait for it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[object, Future] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object, compute: Callable[[], object]) -> object:
        with self._lock:
            fut = self._items.get(key)
            owner = fut is None
            if owner:
                fut = Future()
                self._items[key] = fut
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        assert fut is not None
        if owner:
            try:
                fut.set_result(compute())
            except BaseException as exc:
                with self._lock:  # do not cache failures: a later request retries
                    if self._items.get(key) is fut:
                        del self._items[key]
                fut.set_exception(exc)
        return fut.result()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class RandomAccessRestorer:
    """Restore frame n of a clip on demand (see the module docstring for the exact semantics).

    restorer_factory: `vs_keep.face.restorer_factory(...)` (KEEP per chunk, or CodeFormer per frame). Other options
    as `vs_keep.face.FacePipeline`. tiny: a `TinyFaceRestorer` (DIC); faces whose box side is in [tiny_min,
    min_face_size) then go through it per frame instead of being left alone.
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
        sigma: float = SIGMA,
        smoothing_ends: str | None = None,
        upscale: int = 1,
        antialias: bool = True,
        exact: bool = False,
        parser: Callable | None = None,
        background: Callable | None = None,
        cache_chunks: int = 3,
        cache_detections: int = 512,
        tiny: TinyFaceRestorer | None = None,
        tiny_min: float = 12.0,
    ) -> None:
        check_restore_layout(faces, chunk, upscale)
        self.restorer_factory = restorer_factory
        self.face_size = int(getattr(restorer_factory, "face_size", 512))
        self.detector = detector
        self.chunk, self.scene_reset = int(chunk), bool(scene_reset)
        self.faces, self.min_face_size = faces, float(min_face_size)
        self.link = LinkParams(max_gap=int(max_gap))
        self.sigma = float(sigma)
        self.ends = resolve_smoothing_ends(smoothing_ends, exact)
        self.upscale, self.antialias, self.exact = int(upscale), bool(antialias), bool(exact)
        self.parser, self.background = parser, background
        self.tiny, self.tiny_min = tiny, float(tiny_min)
        if tiny is not None and not 0 < self.tiny_min < self.min_face_size:
            raise InputError(f"tiny_min must be in (0, min_face={self.min_face_size:g}), got {tiny_min}")
        self._chunks = _LRU(cache_chunks)
        self._detections = _LRU(cache_detections)
        self._restore_lock = threading.Lock()  # one model run at a time (the model is not re-entrant on one device)
        self.stats = {"model_steps": 0, "chunks_planned": 0, "detections": 0}

    # -- geometry of chunks -----------------------------------------------------------------------------------

    def span(self, n: int, access: FrameAccess) -> Span:
        """The chunk holding frame n."""
        if not 0 <= n < access.num_frames:
            raise InputError(f"frame {n} outside the clip (0..{access.num_frames - 1})")
        base = n - n % self.chunk
        start, stop = base, min(base + self.chunk, access.num_frames)
        if self.scene_reset:
            start = next((m for m in range(n, base, -1) if access.scene_start(m)), base)
            stop = next((m for m in range(n + 1, stop) if access.scene_start(m)), stop)
        return Span(start, stop)

    def _scene_limits(self, span: Span, lo: int, hi: int, access: FrameAccess) -> tuple[int, int]:
        """Frames [a, b) of the detection window that belong to the chunk's scene."""
        if not self.scene_reset:
            return lo, hi
        a = next((m for m in range(span.start, lo, -1) if access.scene_start(m)), lo)
        b = next((m for m in range(span.stop, hi) if access.scene_start(m)), hi)
        return a, b

    # -- stages -----------------------------------------------------------------------------------------------

    def detections(self, n: int, access: FrameAccess) -> list[Detection]:
        def run() -> list[Detection]:
            self.stats["detections"] += 1
            low = self.tiny_min if self.tiny is not None else self.min_face_size
            return detect_faces(self.detector, access.frame(n), faces=self.faces, min_face_size=low)

        return self._detections.get(n, run)  # type: ignore[return-value]

    def chunk_faces(self, span: Span, access: FrameAccess) -> ChunkFaces:
        return self._chunks.get((span.start, span.stop), lambda: self._restore_chunk(span, access))  # type: ignore[return-value]

    def _restore_chunk(self, span: Span, access: FrameAccess) -> ChunkFaces:
        """Plan the chunk (tracks, smoothed landmarks) and align its faces; the restoration itself is lazy: each
        track's clip advances only as far as the frames asked for (`ClipRun`)."""
        lo, hi = chunk_window(span.start, span.stop, max_gap=self.link.max_gap, sigma=self.sigma)
        hi = min(hi, access.num_frames)
        a, b = self._scene_limits(span, lo, hi, access)
        every = {m: (self.detections(m, access) if a <= m < b else []) for m in range(lo, hi)}
        dets = {m: [d for d in v if box_side(d) >= self.min_face_size] for m, v in every.items()}
        segments = plan_chunk(dets, span.start, span.stop, length=access.num_frames, link=self.link, sigma=self.sigma, ends=self.ends)
        per_frame: dict[int, list] = {m: [] for m in range(span.start, span.stop)}
        method = "lmeds" if self.exact else "lstsq"
        for track, seg in enumerate(segments):
            mats = np.stack([alignment_matrix(lm, self.face_size, method) for lm in seg.landmarks])
            crops = np.stack(
                [align_face(access.frame(int(f)), m, self.face_size, antialias=self.antialias, exact=self.exact) for f, m in zip(seg.frames, mats)]
            )
            clip = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))) * 2.0 - 1.0
            run = ClipRun(self.restorer_factory(track), clip)
            for k, f in enumerate(seg.frames):
                placed = PlacedFace(track=track, frame=int(f), landmarks=seg.landmarks[k], detected=bool(seg.detected[k]))
                per_frame[int(f)].append((run, k, mats[k], placed))
        small = {m: [d for d in every[m] if box_side(d) < self.min_face_size] for m in range(span.start, span.stop)}
        self.stats["chunks_planned"] += 1
        return ChunkFaces(span=span, per_frame=per_frame, small=small if self.tiny is not None else {})

    def _face_image(self, run: ClipRun, k: int) -> np.ndarray:
        before = run.steps
        with self._restore_lock:
            y = run.frame(k)
        self.stats["model_steps"] += run.steps - before
        face = ((y.detach().float().cpu().clamp(-1, 1) + 1) * 0.5).numpy().transpose(1, 2, 0)
        if self.exact:  # the official code converts the restored face to uint8 before pasting
            face = np.rint(face * 255.0) / 255.0
        return np.ascontiguousarray(face, dtype=np.float32)

    def _tiny_faces(self, chunk: ChunkFaces, n: int, frame: np.ndarray) -> list[tuple[FacePaste, TinyFace]]:
        small = chunk.small.get(n)
        if not small or self.tiny is None:
            return []

        def run() -> list:
            with self._restore_lock:
                return self.tiny.restore(frame, small, n)

        return chunk.tiny.get(n, run)  # type: ignore[return-value]

    def render(self, n: int, access: FrameAccess, frame: np.ndarray | None = None, layer: bool = False) -> RenderedFrame:
        """Output frame n (input size x upscale, input dtype) and the faces pasted into it. layer: return the faces
        as colour + alpha instead (the caller composites them into the source in its own format)."""
        span = self.span(n, access)
        chunk = self.chunk_faces(span, access)
        faces = chunk.per_frame.get(n, [])
        frame = access.frame(n) if frame is None else frame
        tiny = self._tiny_faces(chunk, n, access.frame(n))
        pastes = [t[0] for t in tiny]
        for run, k, mat, _ in faces:
            img = self._face_image(run, k)
            mask = self.parser(img, exact=self.exact) if self.parser is not None else None
            pastes.append(FacePaste(img, mat, mask))
        if layer:
            fl = paste_layer(pastes, frame.shape[:2], upscale=self.upscale, exact=self.exact, antialias=self.antialias)
            return RenderedFrame(image=fl.color, faces=tuple(f[3] for f in faces), span=span,
                                 tiny=tuple(t[1] for t in tiny), alpha=fl.alpha)
        image = paste_faces(frame, pastes, upscale=self.upscale, exact=self.exact, antialias=self.antialias, background=self.background)
        return RenderedFrame(image=image, faces=tuple(f[3] for f in faces), span=span, tiny=tuple(t[1] for t in tiny))

    def close(self) -> None:
        """Drop caches and the restorer (frees GPU memory held by tensors they reference)."""
        self._chunks.clear()
        self._detections.clear()
        self.restorer_factory = None  # type: ignore[assignment]


class StreamAccess:
    """`FrameAccess` over frames arriving in order (a decoder): reads ahead on demand and keeps only the frames a
    linear pass can still ask for. `restore_stream` drops everything before the current chunk's start; detections
    of older frames are served from the restorer's cache."""

    def __init__(self, frames, num_frames: int, scene: Callable[[np.ndarray, np.ndarray], bool] | None = None) -> None:
        self._it = iter(frames)
        self.num_frames = int(num_frames)
        self._buf: dict[int, np.ndarray] = {}
        self._next = 0
        self._floor = 0
        self._scene = scene  # cut detector on (frame n-1, frame n), decided as frames arrive
        self._cuts: set[int] = set()
        self._last: np.ndarray | None = None

    def frame(self, n: int) -> np.ndarray:
        if n < self._floor:
            raise InputError(f"frame {n} was already released (a linear pass never needs it again)")
        while self._next <= n:
            try:
                img = next(self._it)
            except StopIteration:
                raise InputError(
                    f"the input ended after {self._next} frames but {self.num_frames} were announced"
                ) from None
            img = np.asarray(img)
            if self._scene is not None and self._last is not None and self._scene(self._last, img):
                self._cuts.add(self._next)
            self._buf[self._next] = self._last = img
            self._next += 1
        return self._buf[n]

    def scene_start(self, n: int) -> bool:
        if self._scene is None or n <= 0:
            return False
        if n >= self._next:
            self.frame(min(n, self.num_frames - 1))
        return n in self._cuts

    def release_before(self, n: int) -> None:
        self._floor = max(self._floor, n)
        for k in [k for k in self._buf if k < n]:
            del self._buf[k]

    @property
    def buffered(self) -> int:
        return len(self._buf)


def restore_stream(engine: RandomAccessRestorer, frames, num_frames: int, *, layer: bool = False,
                   scene: Callable[[np.ndarray, np.ndarray], bool] | None = None):
    """Linear pass over `frames` (an iterable of RGB arrays): yields RenderedFrame n = 0..num_frames-1 in order,
    identical to random access on the same frames, with memory bounded by one chunk plus its look-ahead.
    layer: faces as colour + alpha (see `render`); scene: cut detector on (frame n-1, frame n)."""
    access = StreamAccess(frames, num_frames, scene)
    for n in range(num_frames):
        result = engine.render(n, access, layer=layer)
        access.release_before(result.span.start)
        yield result
