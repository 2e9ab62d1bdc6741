"""A small PyAV-backed source filter: RGB24 frames of a video file, with random access.

The pip wheel of VapourSynth ships no source plugin; this one needs nothing but PyAV. Frames are decoded in
order; a backward jump or a far forward jump reopens the file and seeks to the nearest keyframe before the target
(`vs_keep.video.decode`, the CLI's decoder, with timestamps from a packet index built once). Good enough for previews, tests and vspipe runs; bs/lsmas/
ffms2 are faster when installed.

The open container (one file descriptor plus FFmpeg's decoder buffers) is closed when the clip is freed (script
reload, `vsengine` dispose), not left for the garbage collector: previewers reload scripts hundreds of times.
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import vapoursynth as vs

from vs_keep.concurrency import LRUCache
from vs_keep.errors import user_message
from vs_keep.video import FrameSource, decode

from .frames import write_rgb


def _close(holder: list) -> None:
    """Stop the decoding generator in `holder` (a one-element list, so the finalizer holds no reference to the
    decoder); stopping it closes its container."""
    frames, holder[0] = holder[0], None
    if frames is not None:
        frames.close()


class _Decoder:
    """Random access over `vs_keep.video.decode` (the one seeking decoder): decodes on in order, and restarts at
    the keyframe before the target for a backward or a far forward jump."""

    def __init__(self, path: Path) -> None:
        src = FrameSource(path)
        self.path = path
        self.width, self.height, self.fps = src.info.width, src.info.height, Fraction(src.info.fps)
        self.pts = src.timestamps()  # presentation order
        self.num_frames = len(self.pts)
        self._open: list = [None]  # the decoding generator (it holds the open container), if any
        self._closer = weakref.finalize(self, _close, self._open)
        self._next = 0  # index of the frame the generator yields next
        self._cache = LRUCache(32)  # recent frames: VapourSynth asks for neighbours again
        self._lock = threading.Lock()

    def frame(self, n: int) -> np.ndarray:
        with self._lock:
            hit = self._cache.get(n)
            if hit is not None:
                return hit
            if self._open[0] is None or n < self._next or n > self._next + 60:
                _close(self._open)
                self._open[0] = decode(self.path, start=n, start_pts=self.pts[n])
                self._next = n
            for fr in self._open[0]:
                i = bisect.bisect_left(self.pts, fr.pts) if fr.pts is not None else self._next
                self._next = i + 1
                self._cache.put(i, fr.to_ndarray(format="rgb24"))
                if i >= n:
                    break
            else:  # end of the stream: give the file back now, a later request reopens it
                _close(self._open)
            hit = self._cache.get(n)
            if hit is None:
                raise vs.Error(f"source: could not decode frame {n} of {self.path}")
            return hit


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
