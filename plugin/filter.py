"""`keep(clip, ...)`: KEEP face restoration as a VapourSynth filter.

Graph: working_clip (RGB at full precision, scene flags) -> one FrameEval-wrapped ModifyFrame per requested frame
(so frames are served in parallel) -> engine `RandomAccessRestorer.render(n, layer=True)` (faces as colour + alpha)
-> compose (merged into the untouched source in its own format, see compose.py). The engine makes output
n a pure function of n's chunk, so request order, seeks and thread counts never change a frame. The filter only
pulls upstream frames synchronously and never requests its own output (that deadlocks, see VAPOURSYNTH-NOTES E2).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_keep.errors import VsKeepError

from . import props as P
from .compose import compose, mask_out, scene_flags, split_layer, working_clip
from .frames import frame_to_rgb, layer_clip, model_view, write_layer

log = logging.getLogger("vs_keep.plugin")
core = vs.core


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


def build_filter(clip: vs.VideoNode, engine: Any, *, debug_props: bool, matrix_in_s: str | None, gray: bool | str = "auto",
                 scene_detect: str = "auto", mask: bool = False) -> vs.VideoNode:
    """Wire the engine into a clip. `engine` is a vs_keep.random_access.RandomAccessRestorer."""
    work = working_clip(clip, matrix_in_s, gray)  # issue 12 boundary: model input at full precision
    rgb = scene_flags(work.rgb, scene_detect) if engine.scene_reset else work.rgb
    access = _ClipAccess(rgb)
    up = engine.upscale
    blank = layer_clip(rgb, rgb.width * up, rgb.height * up)
    src_clips = [blank, rgb]

    def render(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            result = engine.render(n, access, layer=True)  # faces as colour + alpha; compose() merges them
        except VsKeepError as exc:
            raise _fail(str(exc)) from None
        out = f[0].copy()
        write_layer(out, result.image, result.alpha)
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

    stacked = core.std.FrameEval(blank, per_frame, clip_src=src_clips)
    layer, alpha = split_layer(stacked)
    if mask:
        return mask_out(alpha)
    out = compose(work, layer, alpha, up)  # the source's own format; untouched where alpha is 0
    return core.std.CopyFrameProps(out, stacked, props=list(P.WRITTEN)) if debug_props else out
