"""Face restoration with random access by frame index: the pure stages the VapourSynth filter wires into a graph,
and `render`/`restore_stream`, which compose the same stages for the CLI's linear pass.

Output frame n is a pure function of the input frames of n's chunk and of the detections around it:
- chunk of n = [start, stop): start is the last multiple of `chunk` at or before n, or the last scene start
  (`_SceneChangePrev`) after it; stop is the next multiple, the next scene start or the end of the clip;
- detections come from the window `chunk_window(start, stop)` (±20 frames of landmark smoothing plus gap
  bridging), cut at scene changes so that tracks and smoothing never cross a cut;
- every track of the chunk is restored as one clip (KEEP's state resets at the chunk start), then each frame's
  faces are pasted back. With `overlap=k` (and `stabilize`, see `vs_keep.face.overlap` and `.face.stabilize`) the
  clip starts up to `history(k, stabilize)` frames before the chunk (priming; their outputs are discarded): still a
  bounded window, and a seek costs chunk + k steps.
At default settings this is exactly the official script's chunking.

Stages (each a function of values, never of request order):
  detect(n, view)                      faces of one frame
  plan_block(base, detect, flag, N)    every chunk of the block [base, base + chunk): spans, tracks, smoothed
                                       landmarks (a block holds several chunks when scene cuts split it)
  crop(view, face)                     one aligned face
  track_run(span, track, crop_of)      one track's lazy KEEP recurrence over its crops (`ClipRun`)
  restored_face(run, k)                step the recurrence to frame k (one model run at a time per device)
  compose(...)                         tiny faces (DIC), parsing masks, paste-back
Caches (detections, block plans, per-track recurrent state) only save work: a miss recomputes the same values.
Nothing here waits on work another thread has promised: concurrent misses compute twice and the first result
stored wins, so callers never block on each other except on plain locks held by a thread that is computing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .errors import InputError
from .face import FacePaste, PlacedFace, align_face, alignment_matrix, chunk_window, detect_faces, paste_faces, paste_layer, plan_chunk
from .face.device import crops_to_clip, model_to_faces, to_frame_device, to_host
from .face.plan import check_restore_layout, resolve_smoothing_ends
from .face.overlap import check_overlap, primed_segments
from .face.overlap import run_start as primed_run_start
from .face.restorers import ClipRun
from .face.stabilize import StabilizedRun, check_stabilize, history
from .face.smooth import SIGMA
from .face.tiny import TinyFace, TinyFaceRestorer, box_side
from .face.track import LinkParams
from .face.types import Detection, Detector

__all__ = [
    "BlockPlan", "ChunkPlan", "ChunkRuns", "Counters", "FacePlan", "FrameAccess", "LRUCache",
    "RandomAccessRestorer", "RenderedFrame", "Span", "StreamAccess", "model_lock", "restore_stream",
]

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


@dataclass(frozen=True)
class Span:
    start: int
    stop: int


@dataclass(frozen=True, eq=False)
class FacePlan:
    """One track's face in one frame of a chunk's run: where its segment (frames first .. first + length - 1 of
    the run) starts, and its smoothed landmarks here. The first `prime` frames of the segment lie before the chunk
    (`overlap=`/`stabilize=` priming: restored only to warm the state, never output); first may then lie in an
    earlier block."""

    track: int
    frame: int
    first: int
    length: int
    landmarks: np.ndarray  # (5, 2) float64
    detected: bool
    prime: int = 0

    @property
    def index(self) -> int:
        """Position of this frame among the track's output frames (`ClipRun.frame`; priming frames excluded)."""
        return self.frame - self.first - self.prime

    @property
    def placed(self) -> PlacedFace:
        return PlacedFace(track=self.track, frame=self.frame, landmarks=self.landmarks, detected=self.detected)


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """One chunk: its faces per frame (in track order) and the tiny-face detections per frame. `faces` also holds
    the faces of the priming frames before `span.start` (see `FacePlan`); only frames of the span are output."""

    span: Span
    faces: dict[int, tuple[FacePlan, ...]]
    small: dict[int, tuple[Detection, ...]]

    def position(self, frame: int, track: int) -> int:
        """Index of `track` among the faces of `frame`."""
        for i, face in enumerate(self.faces.get(frame, ())):
            if face.track == track:
                return i
        raise InputError(f"track {track} has no face in frame {frame} of chunk [{self.span.start}, {self.span.stop})")


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """The chunks of one block [base, base + chunk) (one chunk unless scene cuts split the block)."""

    base: int
    chunks: tuple[ChunkPlan, ...]

    def chunk_of(self, n: int) -> ChunkPlan:
        for c in self.chunks:
            if c.span.start <= n < c.span.stop:
                return c
        raise InputError(f"frame {n} is not in block {self.base}")


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    image: np.ndarray
    faces: tuple[PlacedFace, ...]
    span: Span
    tiny: tuple[TinyFace, ...] = ()
    #: render(layer=True): `image` is the faces' colour layer and this their alpha (vs_keep.face.FaceLayer)
    alpha: np.ndarray | None = None


class Counters:
    """Work counters (model steps, plans, detections), safe to bump from many threads."""

    def __init__(self, *names: str) -> None:
        self._values = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    def add(self, name: str, k: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + k

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class LRUCache:
    """Thread-safe LRU without futures: `get` never waits on anyone; `put` keeps the first value stored for a key
    (so concurrent misses end up sharing one object). With `weak`, values still referenced elsewhere (work in
    flight) stay reachable after leaving the LRU, so eviction never loses work someone is still doing."""

    def __init__(self, capacity: int, *, weak: bool = False) -> None:
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[object, object] = OrderedDict()
        self._live: weakref.WeakValueDictionary | None = weakref.WeakValueDictionary() if weak else None
        self._lock = threading.Lock()

    def _lookup(self, key: object) -> object | None:
        value = self._items.get(key)
        if value is None and self._live is not None:
            value = self._live.get(key)
        return value

    def _store(self, key: object, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if self._live is not None:
            self._live[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._lookup(key)
            if value is not None:
                self._store(key, value)
            return value

    def put(self, key: object, value: object) -> object:
        with self._lock:
            existing = self._lookup(key)
            if existing is not None:
                value = existing
            self._store(key, value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            if self._live is not None:
                self._live.clear()


class ChunkRuns:
    """The lazy recurrent state (`ClipRun`) of each track of one chunk."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self._runs: dict[int, ClipRun | StabilizedRun] = {}
        self._lock = threading.Lock()

    def get(self, track: int) -> ClipRun | StabilizedRun | None:
        with self._lock:
            return self._runs.get(track)

    def put(self, track: int, run: ClipRun | StabilizedRun) -> ClipRun | StabilizedRun:
        with self._lock:
            return self._runs.setdefault(track, run)


_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def model_lock(device: str | None) -> threading.Lock:
    """The lock that serialises model runs on one device (shared by every engine in the process)."""
    key = str(device or "cpu")
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(key, threading.Lock())


class RandomAccessRestorer:
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
        device: str | None = None,
        frame_device: torch.device | str | None = None,
        overlap: int = 0,
        stabilize: float = 0.0,
        max_face_size: float | None = None,
        select: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        check_restore_layout(faces, chunk, upscale)
        self.overlap, self.stabilize = check_overlap(overlap), check_stabilize(stabilize)
        #: frames a chunk's run may start before the chunk (0 = official chunks)
        self.history = history(self.overlap, self.stabilize)
        self.restorer_factory = restorer_factory
        self.face_size = int(getattr(restorer_factory, "face_size", 512))
        self.detector = detector
        self.chunk, self.scene_reset = int(chunk), bool(scene_reset)
        self.faces, self.min_face_size = faces, float(min_face_size)
        #: face selection beyond min_face: the largest box side, and the mask of frame m (`select(m)`) read by the
        #: FrameAccess path (`render`); the filter hands each frame's mask to `detect` itself
        self.max_face_size, self.select = max_face_size, select
        self.link = LinkParams(max_gap=int(max_gap))
        self.sigma = float(sigma)
        self.ends = resolve_smoothing_ends(smoothing_ends, exact)
        self.upscale, self.antialias, self.exact = int(upscale), bool(antialias), bool(exact)
        self.parser, self.background = parser, background
        self.tiny, self.tiny_min = tiny, float(tiny_min)
        if tiny is not None and not 0 < self.tiny_min < self.min_face_size:
            raise InputError(f"tiny_min must be in (0, min_face={self.min_face_size:g}), got {tiny_min}")
        self._detections = LRUCache(cache_detections)
        self._plans = LRUCache(max(8, 2 * cache_chunks))
        self._runs = LRUCache(cache_chunks, weak=True)
        # Waiting on this lock cannot deadlock: it is only ever held by a thread that is running a model on inputs
        # it already has (no frame requests, no other locks taken inside except a ClipRun's own).
        self._model_lock = model_lock(device) if device is not None else threading.Lock()
        self.stats = Counters("model_steps", "chunks_planned", "detections", "crops")
        #: torch intra-op threads of every CPU op this engine runs, whichever thread calls it (`_pin_threads`)
        self.threads = torch.get_num_threads()
        self.frame_device = torch.device(frame_device) if frame_device is not None else None
        left, right = self.block_reach()
        self._device_frames = LRUCache(left + 2 * self.chunk + right)

    # -- geometry of blocks and chunks ------------------------------------------------------------------------

    def block_reach(self) -> tuple[int, int]:
        """(left, right): `plan_block(base)` reads detections and scene flags of frames
        [base - left, base + chunk + right) only (clipped to the clip)."""
        far = 1 << 30  # far from frame 0, so the window is not clipped there
        lo, hi = chunk_window(far - self.history, far + self.chunk, max_gap=self.link.max_gap, sigma=self.sigma)
        return far - lo, hi - far - self.chunk

    def block_window(self, base: int, num_frames: int) -> tuple[int, int]:
        left, right = self.block_reach()
        return max(base - left, 0), min(base + self.chunk + right, num_frames)

    def spans(self, base: int, flag: Callable[[int], bool], num_frames: int) -> list[Span]:
        """The chunks of block [base, base + chunk): cut at every scene start when scene_reset."""
        stop = min(base + self.chunk, num_frames)
        cuts = [m for m in range(base + 1, stop) if flag(m)] if self.scene_reset else []
        edges = [base, *cuts, stop]
        return [Span(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def span(self, n: int, access: FrameAccess) -> Span:
        """The chunk holding frame n."""
        self._check_index(n, access.num_frames)
        base = n - n % self.chunk
        return next(s for s in self.spans(base, access.scene_start, access.num_frames) if s.start <= n < s.stop)

    def first_frame(self, start: int, flag: Callable[[int], bool]) -> int:
        """First frame of the run of the chunk starting at `start`: `start` unless primed by overlap/stabilize
        (never across the clip start or a scene start)."""
        return primed_run_start(start, self.history, flag if self.scene_reset else None)

    def run_start(self, span: Span, access: FrameAccess) -> int:
        """`first_frame` of `span` over a FrameAccess (the CLI's linear pass releases frames before it)."""
        return self.first_frame(span.start, access.scene_start)

    def _check_index(self, n: int, num_frames: int) -> None:
        if not 0 <= n < num_frames:
            raise InputError(f"frame {n} outside the clip (0..{num_frames - 1})")

    def _scene_limits(self, span: Span, lo: int, hi: int, flag: Callable[[int], bool]) -> tuple[int, int]:
        """Frames [a, b) of the detection window that belong to the chunk's scene."""
        if not self.scene_reset:
            return lo, hi
        a = next((m for m in range(span.start, lo, -1) if flag(m)), lo)
        b = next((m for m in range(span.stop, hi) if flag(m)), hi)
        return a, b

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
        """Faces of frame n (view: the frame as detection sees it, see `vs_keep.plugin.frames.model_view`), down
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
        `block_window(base)`; detect only inside the scene of the chunk that needs it. Cached by base."""
        hit = self.cached_block(base)
        if hit is not None:
            return hit
        chunks = tuple(self._plan_chunk(s, detect, flag, num_frames) for s in self.spans(base, flag, num_frames))
        return self._plans.put(base, BlockPlan(base=base, chunks=chunks))  # type: ignore[return-value]

    def cached_block(self, base: int) -> BlockPlan | None:
        return self._plans.get(base)  # type: ignore[return-value]

    def _plan_chunk(
        self, span: Span, detect: Callable[[int], list[Detection]], flag: Callable[[int], bool], num_frames: int
    ) -> ChunkPlan:
        run = self.first_frame(span.start, flag)
        lo, hi = chunk_window(run, span.stop, max_gap=self.link.max_gap, sigma=self.sigma)
        hi = min(hi, num_frames)
        a, b = self._scene_limits(span, lo, hi, flag)
        every = {m: (detect(m) if a <= m < b else []) for m in range(lo, hi)}
        dets = {m: [d for d in v if box_side(d) >= self.min_face_size] for m, v in every.items()}
        segments = plan_chunk(dets, run, span.stop, length=num_frames, link=self.link, sigma=self.sigma, ends=self.ends)
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
            small = {m: tuple(d for d in every[m] if box_side(d) < self.min_face_size) for m in range(span.start, span.stop)}
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

    def cached_runs(self, span: Span) -> ChunkRuns | None:
        return self._runs.get((span.start, span.stop))  # type: ignore[return-value]

    def track_run(
        self, span: Span, track: int, length: int, first: int, crop_of: Callable[[int], np.ndarray], prime: int = 0
    ) -> ClipRun | StabilizedRun:
        """The recurrent run of one track of a chunk: the cached one, else a new one over the crops of frames
        first .. first + length - 1 (`crop_of(m)`), the first `prime` of them before the chunk (priming), wrapped
        in the low-band stabilizer when it is on. Building a run does no model work."""
        runs: ChunkRuns = self._runs.get((span.start, span.stop)) or self._runs.put((span.start, span.stop), ChunkRuns(span))  # type: ignore[assignment]
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

    def compose(
        self, n: int, frame: np.ndarray, view: np.ndarray, chunk: ChunkPlan, restored: Iterable[np.ndarray],
        layer: bool = False,
    ) -> RenderedFrame:
        """Output frame n: tiny faces (DIC) and the restored KEEP faces (in track order) pasted onto `frame`
        (unclamped; `view` is the frame as detection saw it). layer: the faces as colour + alpha instead
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
            fl = paste_layer(host, frame.shape[:2], upscale=self.upscale, exact=self.exact, antialias=self.antialias)
            return RenderedFrame(image=fl.color, faces=faces_placed, span=chunk.span, tiny=tiny_placed, alpha=fl.alpha)
        canvas = self._on_device(n, frame) if frame is view else to_frame_device(frame, self.frame_device)
        image = to_host(paste_faces(canvas, pastes, upscale=self.upscale, exact=self.exact, antialias=self.antialias, background=self.background))
        return RenderedFrame(image=image, faces=faces_placed, span=chunk.span, tiny=tiny_placed)

    def _tiny_faces(self, n: int, view: np.ndarray, small: tuple[Detection, ...]) -> list[tuple[FacePaste, TinyFace]]:
        if not small or self.tiny is None:
            return []
        with self._model_lock:
            return self.tiny.restore(view, list(small), n)

    # -- composition over a FrameAccess (CLI, tests) ----------------------------------------------------------

    def render(self, n: int, access: FrameAccess, frame: np.ndarray | None = None, layer: bool = False) -> RenderedFrame:
        """Output frame n (input size x upscale, input dtype) and the faces pasted into it. layer: return the faces
        as colour + alpha instead (the caller composites them into the source in its own format)."""
        self._check_index(n, access.num_frames)
        base = n - n % self.chunk
        block = self.plan_block(base, functools.partial(self._detect_from, access=access), access.scene_start, access.num_frames)
        chunk = block.chunk_of(n)
        restored = []
        for face in chunk.faces.get(n, ()):
            crop_of = lambda m, t=face.track: self.crop(access.frame(m), chunk.faces[m][chunk.position(m, t)])  # noqa: E731
            run = self.track_run(chunk.span, face.track, face.length, face.first, crop_of, face.prime)
            restored.append(self.restored_face(run, face.index))
        view = access.frame(n)
        return self.compose(n, view if frame is None else frame, view, chunk, restored, layer=layer)

    def _detect_from(self, m: int, access: FrameAccess) -> list[Detection]:
        """`detect` over a FrameAccess, reading the frame only on a cache miss (a linear pass has released the
        frames before the current run, whose detections the next block's window still asks for)."""
        hit = self.cached_detections(m)
        if hit is not None:
            return hit
        return self.detect(m, access.frame(m), None if self.select is None else self.select(m))

    def close(self) -> None:
        """Drop caches and every model reference (restorer, detector, parser, DIC) so their memory can go."""
        self._runs.clear()
        self._plans.clear()
        self._detections.clear()
        self._device_frames.clear()
        self.restorer_factory = None  # type: ignore[assignment]
        self.detector = None  # type: ignore[assignment]
        self.parser = None
        self.tiny = None
        self.background = None


class StreamAccess:
    """`FrameAccess` over frames arriving in order (a decoder): reads ahead on demand and keeps only the frames a
    linear pass can still ask for. `restore_stream` drops everything before the current chunk's run start; detections
    of older frames are served from the restorer's cache.

    A shard serves only input frames [lo, hi) of the clip (`vs_keep.shards`): its frames arrive from `first` (lo, or
    lo - 1 so the cut detector can flag lo), and a request outside the window raises, since a shard plan missing
    context must never pass silently. `decode_seconds[m]` is the time spent waiting for frame m."""

    def __init__(self, frames: Iterable[np.ndarray], num_frames: int,
                 scene: Callable[[np.ndarray, np.ndarray], bool] | None = None, *,
                 lo: int = 0, hi: int | None = None, first: int | None = None) -> None:
        self._it = iter(frames)
        self.num_frames = int(num_frames)
        self.lo, self.hi = int(lo), self.num_frames if hi is None else int(hi)
        self._buf: dict[int, np.ndarray] = {}
        self._next = self.lo if first is None else int(first)
        self._floor = self.lo
        self._scene = scene  # cut detector on (frame n-1, frame n), decided as frames arrive
        self._cuts: set[int] = set()
        self._last: np.ndarray | None = None
        self.decode_seconds: dict[int, float] = {}

    def frame(self, n: int) -> np.ndarray:
        if not self.lo <= n < self.hi:
            raise InputError(f"shard context [{self.lo}, {self.hi}) misses frame {n} (a bug in the shard plan)")
        if n < self._floor:
            raise InputError(f"frame {n} was already released (a linear pass never needs it again)")
        while self._next <= n:
            start = time.perf_counter()
            img = next(self._it, None)
            if img is None:
                raise InputError(f"the input ended after {self._next} frames but {self.num_frames} were announced")
            self.decode_seconds[self._next] = time.perf_counter() - start
            img = np.asarray(img)
            if self._scene is not None and self._last is not None and self._scene(self._last, img):
                self._cuts.add(self._next)
            if self._next >= self.lo:
                self._buf[self._next] = img
            self._last = img
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
                   scene: Callable[[np.ndarray, np.ndarray], bool] | None = None) -> Iterator[RenderedFrame]:
    """Linear pass over `frames` (an iterable of RGB arrays): yields RenderedFrame n = 0..num_frames-1 in order,
    identical to random access on the same frames, with memory bounded by one chunk plus its look-ahead.
    layer: faces as colour + alpha (see `render`); scene: cut detector on (frame n-1, frame n)."""
    access = StreamAccess(frames, num_frames, scene)
    for n in range(num_frames):
        result = engine.render(n, access, layer=layer)
        access.release_before(engine.run_start(result.span, access))
        yield result
