"""The linear pass: frames arrive once, in order (a decoder), and the same engine restores them as random access
would, holding only the frames the pass can still read (`vs_keep.sequencer` says which). `vs-keep restore` runs it
(`restore_frames`) over the whole clip, each shard over its window."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .errors import InputError
from .face_engine import FaceEngine, RenderedFrame

__all__ = ["StreamAccess", "restore_frames", "restore_stream"]


class StreamAccess:
    """`FrameAccess` over frames arriving in order: reads ahead on demand and keeps the frames not yet released.

    It serves input frames [lo, hi) only (the window of the frames being restored): frames arrive from `first`
    (lo, or lo - 1 so the cut detector can flag lo), and a request outside the window raises, since a window
    missing context must never pass silently."""

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

    def frame(self, n: int) -> np.ndarray:
        if not self.lo <= n < self.hi:
            raise InputError(f"frame {n} is outside the window [{self.lo}, {self.hi}) of this pass (a bug in vs_keep.sequencer)")
        if n < self._floor:
            raise InputError(f"frame {n} was already released (a linear pass never needs it again)")
        while self._next <= n:
            img = next(self._it, None)
            if img is None:
                raise InputError(f"the input ended after {self._next} frames but {self.num_frames} were announced")
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


def restore_stream(engine: FaceEngine, frames: Iterable[np.ndarray], num_frames: int, *,
                   layer: bool = False, scene: Callable[[np.ndarray, np.ndarray], bool] | None = None,
                   start: int = 0, stop: int | None = None, first: int | None = None) -> Iterator[RenderedFrame]:
    """Yield RenderedFrame n for n = start .. stop - 1 (default: the whole clip of `num_frames`) in order,
    identical to random access on the same frames, holding one chunk's run plus its look-ahead.

    frames: RGB arrays of the clip from frame `first` on; the pass reads frames [lo, hi) =
    `engine.sequencer.input_window(start, stop)` and never asks past hi. first: lo (the default), or lo - 1 so
    that `scene` (a cut detector on frames n-1, n) can flag lo. layer: faces as colour + alpha (see `render`)."""
    stop = num_frames if stop is None else stop
    if stop <= start:
        return
    seq = engine.sequencer
    lo, hi = seq.input_window(start, stop, num_frames)
    access = StreamAccess(frames, num_frames, scene, lo=lo, hi=hi, first=first)
    for n in range(start, stop):
        result = engine.render(n, access, layer=layer)
        access.release_before(seq.release_before(result.span, access.scene_start))
        yield result


def restore_frames(engine: FaceEngine, frames: Iterable[Any], num_frames: int, *, gray: bool = False,
                   strength: float = 1.0, scene: Callable[[np.ndarray, np.ndarray], bool] | None = None,
                   start: int = 0, stop: int | None = None, first: int = 0,
                   background: Iterator[Any] | None = None) -> Iterator[Any]:
    """`restore_stream` over frames as `vs_keep.video.read_frames` gives them, each output frame in its input's
    form: the faces (colour + alpha) merged into a decoded video frame's own samples (`pixels.merge_into_frame`), or into
    an RGB image in RGB (`planes.merge_faces`, the same composer). frames: from frame `first` on (see
    `restore_stream`). background: the pre-upscaled background of each output video frame (`--background`)."""
    from .pixels import merge_into_frame, to_rgb
    from .planes import PlaneFormat, merge_faces, upscale_planes

    pending: dict[int, Any] = {}  # input frames of the output range whose result is not out yet (the pass reads ahead)

    def working() -> Iterator[np.ndarray]:
        for m, frame in enumerate(frames, first):
            if m >= start:
                pending[m] = frame
            yield frame if isinstance(frame, np.ndarray) else to_rgb(frame, gray)

    rgb8, up = PlaneFormat("rgb", 8, False), engine.upscale
    results = restore_stream(engine, working(), num_frames, layer=True, scene=scene, start=start, stop=stop, first=first)
    for n, result in enumerate(results, start):
        frame = pending.pop(n)
        if isinstance(frame, np.ndarray):
            back = upscale_planes([frame[..., c] for c in range(3)], rgb8, up)
            yield np.stack(merge_faces(back, rgb8, result.image, result.alpha, gray=gray, strength=strength), axis=-1)
        else:
            bg = next(background) if background is not None else None
            yield merge_into_frame(frame, result.image, result.alpha, gray=gray, strength=strength, background=bg, upscale=up)
