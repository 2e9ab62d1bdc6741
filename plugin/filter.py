"""`keep(clip, ...)`: KEEP face restoration as a VapourSynth filter, expressed as a graph of stages.

Every upstream frame a callback needs is an input of the node whose callback runs, so VapourSynth fetches it
before the callback starts; no callback requests frames, and none waits on work promised by another callback
(VAPOURSYNTH-NOTES E10: previewers keep many async requests in flight and would deadlock the pool). Stages:

  work    frames.working_clip: the RGB detection and the model read (RGB24 as is, else RGBS in [0, 1])
  flags   scene_flags_clip: 1x1 frames carrying each frame's _SceneChangePrev (the source's, else the
          built-in detector on frames n-1 and n, the previous frame delivered by a clip shifted once)
  detect  1x1 frames with the faces of frame n as props                           (parallel across threads)
  plan    per block [base, base + chunk): inputs are the detect frames of `Sequencer.block_window(base)`, as
          clips shifted once at build time; tracks and smoothed landmarks of every chunk of the block, as props
  crop    aligned face crops of frame n (inputs: frame n and its block's plan)    (parallel)
  restore frame n: KEEP's recurrence up to n inside n's chunk (lazy per-track state; a miss rebuilds it from
          the crops of the chunk, delivered as inputs), then tiny faces and paste-back (parallel; the model
          itself runs one step at a time per device); the faces come out as colour + alpha. A primed run
          (overlap=/stabilize=) starts in earlier blocks whose crop frames carry their own block's plan: the
          node then also takes the RGB frames of `Sequencer.priming` (clips shifted once at build time) and
          crops them with the chunk's own plan
  merge   frames.merge_into_clip merges them into the untouched source in its own format (`vs_keep.planes`, the
          composer `vs-keep restore` uses too), or frames.mask_out gives the alpha

Output n is a pure function of the frames `vs_keep.sequencer` gives it: request order, thread count, seeks and
reloads never change a frame.
Caches (detections, plans, per-track state) only save work; where the engine holds a result, a stage's node for
that frame is built without the inputs it would recompute from (so a cached block plan does not refetch its
window of upstream frames).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_keep.concurrency import LRUCache
from vs_keep.errors import user_message
from vs_keep.face_engine import FaceEngine

from . import props as P
from .frames import frame_to_rgb, layer_clip, mask_out, merge_into_clip, working_clip, write_layer

log = logging.getLogger("vs_keep.plugin")
core = vs.core


def _fail(msg: str) -> vs.Error:
    return vs.Error(f"keep: {msg}")


def frame_error(n: int, exc: BaseException) -> vs.Error:
    """The one-line `vs.Error` a failing frame callback raises (`errors.user_message`: GPU out-of-memory advice,
    `TypeName: first line` for foreign errors); the full traceback goes to the DEBUG log."""
    log.debug("keep: frame %d failed", n, exc_info=exc)
    text = str(exc).removeprefix("keep: ") if isinstance(exc, vs.Error) else user_message(exc)
    return _fail(f"frame {n}: {next((s.strip() for s in text.splitlines() if s.strip()), type(exc).__name__)}")


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Frame callbacks and FrameEval functions: any exception becomes `frame_error`."""

    @functools.wraps(fn)
    def call(n: int, **kw: Any) -> Any:  # VapourSynth passes n= (and f= for frames) by keyword
        try:
            return fn(n, **kw)
        except Exception as exc:  # noqa: BLE001 - reported as one vs.Error line, traceback at DEBUG
            raise frame_error(n, exc) from None

    return call


def _check_clip(clip: Any) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise _fail(f"clip must be a vs.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.width == 0 or clip.height == 0:
        raise _fail("clip must have a constant format and size (use resize to fix one before keep)")
    if clip.num_frames < 1:
        raise _fail("clip has no frames")


def scene_flags_clip(tiny: vs.VideoNode, rgb: vs.VideoNode, mode: str) -> vs.VideoNode:
    """1x1 frames (`tiny`) whose `_SceneChangePrev` says that frame n of `rgb` starts a scene: the upstream's own
    flag where a frame has one (e.g. misc.SCDetect before keep); else, with mode "auto", `vs_keep.scene.is_cut` on
    frames n-1 and n (frame n-1 comes from a clip shifted once, never fetched from a callback, so seeks and threads
    cannot change the answer); with "props", no cut."""
    if mode == "props" or rgb.num_frames < 2:
        return tiny.std.CopyFrameProps(rgb, props=[P.SCENE_CHANGE_PREV])
    from vs_keep.scene import is_cut

    def flag(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = f[0].copy()
        cut = f[1].props.get(P.SCENE_CHANGE_PREV)
        if cut is None:
            cut = int(n > 0 and is_cut(frame_to_rgb(f[2]), frame_to_rgb(f[1])))
        out.props[P.SCENE_CHANGE_PREV] = cut
        return out

    return tiny.std.ModifyFrame([tiny, rgb, rgb[0] + rgb[:-1]], _guarded(flag))


def _blanks(template: vs.VideoNode, length: int) -> list[vs.VideoNode]:
    return [core.std.BlankClip(template, length=length)] if length > 0 else []


def _every(clip: vs.VideoNode, offset: int, cycle: int, length: int) -> vs.VideoNode:
    """Frame b = clip[offset + b * cycle] for b < length (clip must be long enough)."""
    return clip[offset:].std.SelectEvery(cycle=cycle, offsets=[0])[:length]


def _repeat(clip: vs.VideoNode, times: int, length: int) -> vs.VideoNode:
    """Frame n = clip[n // times], n < length."""
    return (core.std.Interleave([clip] * times) if times > 1 else clip)[:length]


def _detect_stage(engine: FaceEngine, tiny: vs.VideoNode, rgb: vs.VideoNode, flags: vs.VideoNode | None,
                  select: vs.VideoNode | None = None) -> vs.VideoNode:
    """1x1 frame n: the detections of frame n (and its scene flag); with `select`, only faces centred on non-zero
    samples of its frame n (an input of this node, like the RGB frame)."""
    inputs = [tiny, rgb] + ([flags] if flags is not None else []) + ([select] if select is not None else [])
    scene = LRUCache(4096)  # flags of frames whose detections the engine holds: a hit needs no upstream frame

    def emit(n: int, f: vs.VideoFrame, dets: list, start: bool) -> vs.VideoFrame:
        out = f.copy()
        P.write_detections(out.props, dets)
        out.props[P.SCENE_CHANGE_PREV] = int(start)
        return out

    def compute(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        mask = np.asarray(f[-1][0]) if select is not None else None  # non-zero where faces are kept
        dets = engine.detect(n, frame_to_rgb(f[1]), mask)
        start = P.is_scene_start(f[2]) if flags is not None else False
        scene.put(n, start)
        return emit(n, f[0], dets, start)

    def node(n: int) -> vs.VideoNode:
        dets = engine.cached_detections(n)
        start = scene.get(n) if flags is not None else False
        if dets is not None and start is not None:
            return tiny.std.ModifyFrame(tiny, _guarded(functools.partial(emit, dets=dets, start=start)))
        return tiny.std.ModifyFrame(inputs, _guarded(compute))

    return core.std.FrameEval(tiny, _guarded(node), clip_src=inputs)


def _plan_stage(engine: FaceEngine, det: vs.VideoNode, num_frames: int) -> vs.VideoNode:
    """1x1 frame b: the plan of block [b * chunk, (b + 1) * chunk), from the detect frames of its window
    (`Sequencer.block_window`)."""
    seq = engine.sequencer
    C = seq.chunk
    blocks = -(-num_frames // C)
    left, right = seq.block_reach()
    template = core.std.BlankClip(det, length=blocks)
    padded = core.std.Splice([*_blanks(det, left), det, *_blanks(det, blocks * C - num_frames + right)])
    window = [_every(padded, left + d, C, blocks) for d in range(-left, C + right)]  # window[i][b] = det[b*C - left + i]

    def emit(b: int, f: vs.VideoFrame, block) -> vs.VideoFrame:
        out = f.copy()
        P.write_plan(out.props, block)
        return out

    def compute(b: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        base = b * C
        lo, hi = seq.block_window(base, num_frames)

        def at(m: int) -> vs.VideoFrame:
            if not lo <= m < hi:
                raise IndexError(f"plan of block {base} asked for frame {m} outside its window [{lo}, {hi})")
            return f[1 + m - (base - left)]

        block = engine.plan_block(base, lambda m: P.read_detections(at(m)), lambda m: P.is_scene_start(at(m)), num_frames)
        return emit(b, f[0], block)

    def node(b: int) -> vs.VideoNode:
        hit = engine.cached_block(b * C)
        if hit is not None:  # no need to fetch (and maybe recompute) the window's frames again
            return template.std.ModifyFrame(template, _guarded(functools.partial(emit, block=hit)))
        return template.std.ModifyFrame([template, *window], _guarded(compute))

    return core.std.FrameEval(template, _guarded(node), clip_src=[template, *window])


def _crop_stage(engine: FaceEngine, tiny: vs.VideoNode, rgb: vs.VideoNode, plan: vs.VideoNode) -> vs.VideoNode:
    """1x1 frame n: the aligned crops of frame n's faces (plan: frame n = the plan of n's block)."""
    inputs = [tiny, rgb, plan]
    block = engine.sequencer.block

    def compute(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        chunk = P.read_plan(f[2], block(n)).chunk_of(n)
        out = f[0].copy()
        faces = chunk.faces.get(n, ())
        if faces:
            view = frame_to_rgb(f[1])
            P.write_crops(out.props, [engine.crop(view, face) for face in faces])
        return out

    def node(n: int) -> vs.VideoNode:
        return tiny.std.ModifyFrame(inputs, _guarded(compute))

    return core.std.FrameEval(tiny, _guarded(node), clip_src=inputs)


def build_filter(clip: vs.VideoNode, engine: FaceEngine, *, debug_props: bool, matrix_in_s: str | None,
                 gray: bool | str = "auto", scene_detect: str = "auto", mask: bool = False, strength: float = 1.0,
                 select: vs.VideoNode | None = None, background: vs.VideoNode | None = None) -> vs.VideoNode:
    """Wire the engine's stages into a graph (see the module docstring)."""
    work = working_clip(clip, matrix_in_s, gray)  # model input at full precision; merge_into_clip merges back
    rgb = work.rgb
    seq = engine.sequencer
    N, C, S = rgb.num_frames, seq.chunk, engine.face_size
    blocks = -(-N // C)
    tiny = core.std.BlankClip(rgb, format=vs.GRAY8, width=1, height=1, keep=True)
    flags = scene_flags_clip(tiny, rgb, scene_detect) if seq.scene_reset and scene_detect != "off" else None
    det = _detect_stage(engine, tiny, rgb, flags, select)
    plan = _repeat(_plan_stage(engine, det, N), C, N)
    crops = _crop_stage(engine, tiny, rgb, plan)
    padded = core.std.Splice([crops, *_blanks(crops, blocks * C - N)])
    block_crops = [_repeat(_every(padded, j, C, blocks), C, N) for j in range(C)]  # [j][n] = crops[base(n) + j]
    H = seq.history
    priming: dict[int, vs.VideoNode] = {}  # [d][n] = rgb[base(n) - d], d = 1 .. H (`Sequencer.priming`)
    if H > 0:
        rgb_padded = core.std.Splice([*_blanks(rgb, H), rgb, *_blanks(rgb, blocks * C - N)])
        priming = {d: _repeat(_every(rgb_padded, H - d, C, blocks), C, N) for d in range(1, H + 1)}
    up = engine.upscale
    blank = layer_clip(rgb, rgb.width * up, rgb.height * up)  # colour + alpha stacked (frames.write_layer)

    def render(n: int, f: list[vs.VideoFrame], chunk, runs, first: int) -> vs.VideoFrame:
        faces = chunk.faces.get(n, ())
        if runs is None:  # state not cached: rebuild it from the chunk's crops (inputs 2.. = frames from span.start,
            # then the RGB frames first .. span.start - 1 of the priming frames, cropped here with this chunk's plan)
            span = chunk.span
            views: dict[int, Any] = {}

            def crop_of(m: int, track: int) -> Any:
                if m >= span.start:
                    return P.read_crop(f[2 + m - span.start], chunk.position(m, track), S)
                if m not in views:
                    views[m] = frame_to_rgb(f[2 + span.stop - span.start + m - first])
                return engine.crop(views[m], chunk.faces[m][chunk.position(m, track)])

            runs = [
                engine.track_run(span, face.track, face.length, face.first, functools.partial(crop_of, track=face.track), face.prime)
                for face in faces
            ]
        restored = [engine.restored_face(run, face.index) for run, face in zip(runs, faces)]
        frame = frame_to_rgb(f[1])
        result = engine.paste_frame(n, frame, chunk, restored, layer=True)
        out = f[0].copy()
        write_layer(out, result.image, result.alpha)
        if debug_props:
            _write_debug_props(out, result)
        return out

    def node(n: int, f: vs.VideoFrame) -> vs.VideoNode:
        base = seq.block(n)
        chunk = P.read_plan(f, base).chunk_of(n)
        faces = chunk.faces.get(n, ())
        held = engine.cached_runs(chunk.span)
        runs = [held.get(face.track) for face in faces] if held is not None else None
        if runs is not None and all(r is not None for r in runs):
            # the node holds the runs themselves: they stay alive (and findable) until this frame is done
            return blank.std.ModifyFrame([blank, rgb], _guarded(functools.partial(render, chunk=chunk, runs=runs, first=n)))
        needed = [block_crops[m - base] for m in range(chunk.span.start, chunk.span.stop)] if faces else []
        first = min((face.first for face in faces), default=chunk.span.start)
        needed += [priming[base - m] for m in seq.priming(chunk.span, first)]  # empty unless the run is primed
        return blank.std.ModifyFrame([blank, rgb, *needed], _guarded(functools.partial(render, chunk=chunk, runs=None, first=first)))

    stacked = core.std.FrameEval(blank, _guarded(node), prop_src=plan,
                                 clip_src=[blank, rgb, plan, *block_crops, *priming.values()])
    if mask:
        return mask_out(stacked, strength)
    out = merge_into_clip(work, stacked, up, strength, background)  # the source's format; untouched where alpha is 0
    return core.std.CopyFrameProps(out, stacked, props=list(P.WRITTEN)) if debug_props else out


def _write_debug_props(out: vs.VideoFrame, result: Any) -> None:
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
