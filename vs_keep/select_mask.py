"""`--select-mask FILE`: which faces `vs-keep restore` restores, as frame n's mask (a face is restored only where
its box centre lies on a non-zero sample; `vs_keep.face.track.select_faces`).

An image is the same mask for every frame; a video holds one mask per frame, read forward (a small window is
kept, since detection asks for frames in increasing order within a block's reach; an older frame seeks back to it,
frame-accurately, so any order gives the same masks). Masks are read as full-range gray: black (0) skips a face.
Use a lossless file (PNG, ffv1): a lossy codec leaves small non-zero values in black.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["MaskFrames"]

#: decoded mask frames kept behind the newest one (a full-frame bool each; an older one is a seek away)
WINDOW = 64


class MaskFrames:
    """frame n -> (H, W) bool mask of `path` (an image or a video); `check` it against the input first."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from .video import FrameSource

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"--select-mask {self.path}: no such file; pass an image or a video of masks")
        self._source = FrameSource(self.path)
        self._still: np.ndarray | None = None
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._reader: Iterator[np.ndarray] | None = None
        self._next = 0

    def check(self, width: int, height: int, num_frames: int) -> MaskFrames:
        """Refuse a mask of another size, or a video with fewer frames than the input."""
        info = self._source.info
        if (info.width, info.height) != (width, height):
            raise InputError(f"--select-mask {self.path} is {info.width}x{info.height}, the input {width}x{height}: "
                             "make the mask the input's size")
        if self._source.is_video and (count := self._source.count_frames()) < num_frames:
            raise InputError(f"--select-mask {self.path} has {count} frames, the input {num_frames}: give one mask "
                             "per frame (or an image for all frames)")
        return self

    def _read(self, start: int) -> Iterator[np.ndarray]:
        from .video import decode

        for frame in decode(self.path, start=start):
            yield frame.to_ndarray(format="gray", dst_color_range=2) > 0

    def __call__(self, n: int) -> np.ndarray:
        if not self._source.is_video:
            if self._still is None:
                from .video import read_image

                self._still = read_image(self.path).max(axis=2) > 0
            return self._still
        hit = self._frames.get(n)
        if hit is not None:
            return hit
        if self._reader is None or n < self._next:  # first call, or older than the window: seek to it
            self._reader, self._next = self._read(n), n
            self._frames.clear()
        while self._next <= n:
            mask = next(self._reader, None)
            if mask is None:
                raise InputError(f"--select-mask {self.path}: no mask for frame {n}")
            self._frames[self._next] = mask
            self._next += 1
            if len(self._frames) > WINDOW:
                self._frames.popitem(last=False)
        return self._frames[n]
