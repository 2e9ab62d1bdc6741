"""The filter's boundary with the source clip: what the model sees, and how its faces go back into the source.

    work = working_clip(clip, matrix_in_s, gray)    # RGB the detector/model read (RGB24 for 8-bit sources, else RGBS)
    ... restore: faces as a stacked colour + alpha layer at the output size (frames.write_layer) ...
    out = compose(work, stacked, upscale, ...)      # the source's own format, merged with the alpha
    mask = mask_out(stacked, strength)              # the alpha for users (GRAYS)

Both directions are `vs_keep.planes` on the frames' planes, the functions `vs-keep restore` calls on its decoded
frames: the same options give the same frames, and every sample the alpha does not reach is the input's bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import vapoursynth as vs

from vs_keep.errors import InputError
from vs_keep.planes import MATRIX_NAMES, PlaneFormat, looks_gray, merge_faces, probe_frames, rgb_planes, to_rgb, upscale_planes

from . import props as P
from .frames import frame_to_rgb, plane_format, planes_of, read_layer, write_planes

log = logging.getLogger("vs_keep.plugin")
core = vs.core


def _fail(msg: str) -> vs.Error:
    return vs.Error(f"keep: {msg}")


@dataclass(frozen=True, eq=False)
class Working:
    """A source clip prepared for restoration. rgb: what detection, alignment and the model read
    (`vs_keep.planes.to_rgb`: RGB24 for 8-bit integer sources, else RGBS; gray material as luma replicated).
    gray: only luma comes back. fmt: the source's planes as the composer reads them (range, matrix)."""

    src: vs.VideoNode
    rgb: vs.VideoNode
    gray: bool
    fmt: PlaneFormat


def _source_range(fmt: vs.VideoFormat, props0: Mapping[str, Any]) -> bool | None:
    """Full range for integer YUV/GRAY per `_Range` of frame 0 (YUV default limited, GRAY default full); None for
    RGB/float."""
    if fmt.sample_type == vs.FLOAT or fmt.color_family == vs.RGB:
        return None
    return P.is_full_range(props0, default=fmt.color_family == vs.GRAY)


def _matrix(fmt: vs.VideoFormat, props0: Mapping[str, Any], matrix_in_s: str | None) -> int:
    """The YUV matrix (H.273 code): `matrix_in_s` if given, else frame 0's `_Matrix`."""
    if fmt.color_family != vs.YUV:
        return 1
    if matrix_in_s is not None:
        if matrix_in_s not in MATRIX_NAMES:
            raise _fail(f"matrix_in_s must be one of {', '.join(map(repr, MATRIX_NAMES))}, got {matrix_in_s!r}")
        return MATRIX_NAMES[matrix_in_s]
    matrix = props0.get(P.MATRIX)
    if matrix is None or int(matrix) == 2:  # 2 = unspecified
        raise _fail(
            f"{fmt.name} input has no usable _Matrix frame property; pass matrix_in_s='709' (or '170m', '2020ncl', ...) "
            "or convert to RGBS yourself, e.g. core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')"
        )
    return int(matrix)


def working_clip(clip: vs.VideoNode, matrix_in_s: str | None = None, gray: bool | str = "auto") -> Working:
    """Prepare `clip` (any constant RGB/YUV/GRAY format) for restoration; see `Working`. gray="auto" reads the
    frames of `planes.probe_frames` here, at build time."""
    fmt = clip.format
    props0: dict[str, Any] = {}
    if fmt.color_family != vs.RGB:  # _Range (and YUV's _Matrix) from frame 0: one synchronous read, at build time
        with clip.get_frame(0) as f0:
            props0 = dict(f0.props)
    try:
        pf = plane_format(fmt, _source_range(fmt, props0), _matrix(fmt, props0, matrix_in_s))
    except InputError as exc:
        raise _fail(f"{exc} (or pass matrix_in_s)") from None
    flat = pf.family == "gray" or gray is True
    if gray == "auto" and pf.family != "gray":
        rgbs = []
        for n in probe_frames(clip.num_frames):
            with clip.get_frame(n) as f:
                rgbs.append(to_rgb(planes_of(f), pf))
        flat = looks_gray(rgbs)
    if flat and pf.family != "gray":
        log.info("keep: %s restored as gray (the face layer's luma only)", fmt.name)
    if fmt.id in (vs.RGB24, vs.RGBS):
        return Working(clip, clip, flat, pf)
    rgb_format = vs.RGB24 if (pf.bits == 8 and not pf.is_float) else vs.RGBS
    blank = core.std.BlankClip(clip, format=rgb_format, keep=True)

    def convert(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = f[0].copy()
        write_planes(out, rgb_planes(planes_of(f[1]), pf, flat))
        return out

    rgb = core.std.CopyFrameProps(blank.std.ModifyFrame([blank, clip], convert), clip)
    return Working(clip, rgb, flat, pf)


def compose(work: Working, stacked: vs.VideoNode, upscale: int = 1, strength: float = 1.0,
            background: vs.VideoNode | None = None) -> vs.VideoNode:
    """The source with the faces merged in (`planes.merge_faces`), in the source's format and frame props.
    stacked: colour + alpha at the output size (`frames.layer_clip`). The background: the source (upscale 1),
    `background` (a clip of the output size), or the source resized bilinearly (`planes.upscale_planes`)."""
    src, pf = work.src, work.fmt
    width, height = stacked.width, stacked.height // 4
    same = (width, height) == (src.width, src.height)
    base = src if same else core.std.BlankClip(src, width=width, height=height, keep=True)
    inputs = [base, src, stacked] + ([background] if background is not None else [])

    def merge(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        back = planes_of(f[3]) if background is not None else upscale_planes(planes_of(f[1]), pf, upscale)
        color, alpha = read_layer(f[2])
        planes = merge_faces(back, pf, color, alpha, gray=work.gray, strength=strength)
        if same and background is None and all(a is b for a, b in zip(planes, back)):
            return f[1]  # nothing merged: the source frame itself
        out = f[0].copy()
        write_planes(out, planes)
        return out

    out = base.std.ModifyFrame(inputs, merge)
    return out if same else core.std.CopyFrameProps(out, src)


def mask_out(stacked: vs.VideoNode, strength: float = 1.0) -> vs.VideoNode:
    """The paste alpha for users: GRAYS at the output size, 0 = source untouched, 1 = restored face only (scaled
    by `strength`, as `compose` applies it)."""
    h = stacked.height // 4
    alpha = core.std.Crop(stacked, top=3 * h)
    return alpha if strength == 1.0 else core.std.Expr(alpha, f"x {float(strength)!r} *")


def scene_flags(clip: vs.VideoNode, mode: str = "auto") -> vs.VideoNode:
    """`clip` with `_SceneChangePrev` on every frame. "auto": a frame's own prop wins; frames without it are
    decided by `vs_keep.scene.is_cut` on frames n-1 and n (delivered together, so seeks and threads cannot change
    the answer). "props": the clip as it is (frames without the prop are no cut)."""
    if mode == "props" or clip.num_frames < 2:
        return clip
    from vs_keep.scene import is_cut

    prev = clip[0] + clip[:-1]

    def flag(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        cur = f[0]
        if P.SCENE_CHANGE_PREV in cur.props:
            return cur
        out = cur.copy()
        out.props[P.SCENE_CHANGE_PREV] = int(n > 0 and is_cut(frame_to_rgb(f[1]), frame_to_rgb(cur)))
        return out

    return core.std.ModifyFrame(clip, clips=[clip, prev], selector=flag)
