"""A small PyAV-backed source filter: RGB24 frames of a video file, with random access.

The pip wheel of VapourSynth ships no source plugin; this one needs nothing but PyAV. Frames are decoded in
order; a backward jump or a far forward jump reopens the file and seeks to the nearest keyframe before the target
(timestamps mapped from a packet index built once). Good enough for previews, tests and vspipe runs; bs/lsmas/
ffms2 are faster when installed.

The open container (one file descriptor plus FFmpeg's decoder buffers) is closed when the clip is freed (script
reload, `vsengine` dispose), not left for the garbage collector: previewers reload scripts hundreds of times.
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np
import vapoursynth as vs

from vs_keep.errors import InputError, user_message

from .frames import write_rgb


def _close(holder: list) -> None:
    """Close the container in `holder` (a one-element list, so the finalizer holds no reference to the decoder)."""
    container, holder[0] = holder[0], None
    if container is not None:
        container.close()


class _Decoder:
    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError("no video stream")
            s = c.streams.video[0]
            self.width, self.height = s.codec_context.width, s.codec_context.height
            self.fps = Fraction(s.average_rate or s.guessed_rate or 25)
            pts, keys = [], []
            for p in c.demux(s):
                if p.pts is not None:
                    pts.append(p.pts)
                    if p.is_keyframe:
                        keys.append(p.pts)
        self.pts = sorted(pts)  # presentation order
        self.keyframes = sorted(keys) or self.pts[:1]
        self.num_frames = len(self.pts)
        self._open: list = [None]  # the container being decoded from, if any
        self._closer = weakref.finalize(self, _close, self._open)
        self._iter = None
        self._next = 0  # index of the frame the iterator yields next
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _restart(self, target: int) -> None:
        import av

        self._iter = None
        _close(self._open)
        container = self._open[0] = av.open(str(self.path))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        k = bisect.bisect_right(self.keyframes, self.pts[target]) - 1
        start_pts = self.keyframes[max(k, 0)]
        if start_pts != self.pts[0]:
            container.seek(start_pts, stream=stream, backward=True)
        self._iter = container.decode(stream)
        self._next = None  # unknown until the first decoded frame's pts

    def frame(self, n: int) -> np.ndarray:
        with self._lock:
            hit = self._cache.get(n)
            if hit is not None:
                return hit
            if self._iter is None or self._next is None or n < self._next or n > self._next + 60:
                self._restart(n)
            for fr in self._iter:  # type: ignore[union-attr]
                i = bisect.bisect_left(self.pts, fr.pts) if fr.pts is not None else (self._next or 0)
                self._next = i + 1
                img = fr.to_ndarray(format="rgb24")
                self._cache[i] = img
                while len(self._cache) > 32:
                    self._cache.popitem(last=False)
                if i >= n:
                    break
            else:  # end of the stream: give the file back now, a later request reopens it
                self._iter = None
                _close(self._open)
            if n not in self._cache:
                raise vs.Error(f"source: could not decode frame {n} of {self.path}")
            return self._cache[n]


def pyav_source(path: str | os.PathLike[str]) -> vs.VideoNode:
    p = Path(path)
    if not p.is_file():
        raise vs.Error(f"source: file not found: {p}")
    try:
        dec = _Decoder(p)
    except Exception as exc:  # PyAV raises several error types for unreadable files
        raise vs.Error(f"source: cannot open {p} as a video: {user_message(exc)}") from None
    if dec.num_frames == 0:
        raise vs.Error(f"source: {p} has no video frames")
    core = vs.core
    blank = core.std.BlankClip(
        format=vs.RGB24, width=dec.width, height=dec.height, length=dec.num_frames,
        fpsnum=dec.fps.numerator, fpsden=dec.fps.denominator, keep=True,
    )

    def read(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            rgb = dec.frame(n)
        except vs.Error:
            raise
        except Exception as exc:  # a damaged file mid-decode: one line naming the file, not a PyAV traceback
            raise vs.Error(f"source: frame {n} of {p}: {user_message(exc)}; the file may be damaged") from None
        out = f.copy()
        write_rgb(out, rgb)
        return out

    clip = blank.std.ModifyFrame(blank, read)  # serialized: the decoder is stateful
    return clip.std.SetFrameProps(_Matrix=0, _Range=1)
