"""`keep(clip, ...)`: KEEP face restoration as a VapourSynth filter.

Graph: (YUV -> RGBS when needed) -> one FrameEval-wrapped ModifyFrame per requested frame (so frames are served in
parallel) -> engine `RandomAccessRestorer.render(n)` -> (RGBS -> the input's YUV format). The engine makes output
n a pure function of n's chunk, so request order, seeks and thread counts never change a frame. The filter only
pulls upstream frames synchronously and never requests its own output (that deadlocks, see VAPOURSYNTH-NOTES E2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_keep.errors import VsKeepError

from . import props as P
from .frames import frame_to_rgb, model_view, write_rgb

log = logging.getLogger("vs_keep.plugin")
core = vs.core

RGB_FORMATS = (vs.RGB24, vs.RGBS, vs.RGBH)


def _fail(msg: str) -> vs.Error:
    return vs.Error(f"keep: {msg}")


class _ClipAccess:
    """`FrameAccess` over an upstream clip: synchronous upstream requests (safe inside callbacks)."""

    def __init__(self, clip: vs.VideoNode) -> None:
        self.clip = clip
        self.num_frames = clip.num_frames
        self._scene: dict[int, bool] = {}
        self._lock = threading.Lock()

    def frame(self, n: int) -> np.ndarray:
        with self.clip.get_frame(n) as f:
            return model_view(frame_to_rgb(f))

    def scene_start(self, n: int) -> bool:
        with self._lock:
            hit = self._scene.get(n)
        if hit is None:
            with self.clip.get_frame(n) as f:
                hit = P.is_scene_start(f)
            with self._lock:
                if len(self._scene) > 4096:
                    self._scene.clear()
                self._scene[n] = hit
        return hit


def _check_clip(clip: Any) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise _fail(f"clip must be a vs.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.width == 0 or clip.height == 0:
        raise _fail("clip must have a constant format and size (use resize to fix one before keep)")
    if clip.num_frames < 1:
        raise _fail("clip has no frames")


def _to_rgb(clip: vs.VideoNode, matrix_in_s: str | None) -> tuple[vs.VideoNode, Callable[[vs.VideoNode], vs.VideoNode]]:
    """The clip in a working RGB format and a function that converts the result back to the input's format."""
    fmt = clip.format
    if fmt.id in RGB_FORMATS:
        return clip, lambda c: c
    if fmt.color_family == vs.RGB:
        work = vs.RGBS if fmt.sample_type == vs.FLOAT else vs.RGB24
        hint = "RGBS" if work == vs.RGBS else "RGB24"
        log.debug("converting %s to %s", fmt.name, hint)
        return clip.resize.Point(format=work), lambda c: c.resize.Point(format=fmt.id)
    if fmt.color_family == vs.GRAY:
        raise _fail(
            f"GRAY input ({fmt.name}) is not supported; make it RGB first, e.g. "
            "core.std.ShufflePlanes(clip, [0, 0, 0], vs.RGB) then resize to RGBS"
        )
    # YUV: honour _Matrix/_Range (or matrix_in_s), restore the same on the way out.
    with clip.get_frame(0) as f0:
        matrix = f0.props.get(P.MATRIX)
        full = P.is_full_range(f0, default=False)
    if matrix_in_s is None and (matrix is None or int(matrix) == 2):  # 2 = unspecified
        raise _fail(
            f"{fmt.name} input has no usable _Matrix frame property; pass matrix_in_s='709' (or '170m', '2020ncl', ...) "
            "or convert to RGBS yourself, e.g. core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')"
        )
    kw_in: dict[str, Any] = {"matrix_in_s": matrix_in_s} if matrix_in_s else {}
    rgb = clip.resize.Bicubic(format=vs.RGBS, **kw_in)
    kw_out: dict[str, Any] = {"matrix_s": matrix_in_s} if matrix_in_s else {"matrix": int(matrix)}
    kw_out["range"] = vs.RANGE_FULL if full else vs.RANGE_LIMITED

    def back(c: vs.VideoNode) -> vs.VideoNode:
        return c.resize.Bicubic(format=fmt.id, **kw_out)

    return rgb, back


def build_filter(clip: vs.VideoNode, engine: Any, *, debug_props: bool, matrix_in_s: str | None) -> vs.VideoNode:
    """Wire the engine into a clip. `engine` is a vs_keep.random_access.RandomAccessRestorer."""
    rgb, back = _to_rgb(clip, matrix_in_s)
    access = _ClipAccess(rgb)
    up = engine.upscale
    blank = core.std.BlankClip(rgb, width=rgb.width * up, height=rgb.height * up, keep=True)
    src_clips = [blank, rgb]

    def render(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            # paste onto the frame as it is (float input unclamped); faces are cropped from the clamped view
            result = engine.render(n, access, frame=frame_to_rgb(f[1]))
        except VsKeepError as exc:
            raise _fail(str(exc)) from None
        out = f[0].copy()
        write_rgb(out, result.image)
        out.props.update(dict(f[1].props))
        if debug_props:
            faces = result.faces
            out.props[P.FACES] = len(faces)
            out.props[P.TRACK_IDS] = [int(pf.track) for pf in faces] or [-1]
            out.props[P.DETECTED] = [int(pf.detected) for pf in faces] or [-1]
            if faces:
                out.props[P.LANDMARKS] = [float(v) for pf in faces for v in np.asarray(pf.landmarks).reshape(-1)]
            if result.tiny:
                out.props[P.TINY_FACES] = len(result.tiny)
                out.props[P.TINY_LANDMARKS] = [float(v) for tf in result.tiny for v in tf.landmarks68.reshape(-1)]
            out.props[P.CHUNK_START] = result.span.start
            out.props[P.CHUNK_END] = result.span.stop
        return out

    def per_frame(n: int) -> vs.VideoNode:
        # a fresh ModifyFrame per frame: callbacks of different frames may run in parallel
        return blank.std.ModifyFrame(clips=src_clips, selector=render)

    restored = core.std.FrameEval(blank, per_frame, clip_src=src_clips)
    return back(restored)
