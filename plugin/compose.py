"""The filter's boundary with the source clip: what the model sees, and how its faces go back into the source.

    work = working_clip(clip, matrix_in_s, gray)    # RGB the detector/model read (RGB24 as is, else RGBS)
    ... restore: faces as an RGBS colour layer + GRAYS alpha at the output size ...
    out = compose(work, layer, alpha, upscale)      # the source's own format, merged with the alpha
    mask = mask_out(alpha)                          # the alpha for users (GRAYS)

Film work chains filters on 10/16-bit YUV, RGB48 or GRAY scans, so the filter must not touch what it does not
restore: `compose` converts the source to float losslessly (integers up to 16 bit are exact in float32), blends
`x + alpha·(layer − x)` only where alpha > 0 and converts back; where alpha is 0 the float value is the input's
own, so the output equals the input bit for bit. YUV planes are blended in YUV: the layer is converted with the
clip's matrix, and for subsampled chroma the alpha is resampled with a non-negative (bilinear) kernel, so only
chroma samples next to a face change. Gray material (GRAY formats, or flat chroma with gray="auto") is restored on
its luma replicated to RGB and only the luma comes back, converted like the official script (bgr2gray weights).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import vapoursynth as vs

from . import props as P

log = logging.getLogger("vs_keep.plugin")
core = vs.core

#: official `bgr2gray` weights for a restored face of gray input (R, G, B)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: official `is_gray` threshold: mean variance of the channel differences, 8-bit units
GRAY_THRESHOLD = 10.0
#: blend only where alpha > 0: there `x + a·(y − x)`, elsewhere x itself (also when the layer holds anything)
BLEND = "z 0 > x y x - z * + x ?"


def _fail(msg: str) -> vs.Error:
    return vs.Error(f"keep: {msg}")


@dataclass(frozen=True, eq=False)
class Working:
    """A source clip prepared for restoration. rgb: what detection, alignment and the model read (RGB24 for
    RGB24 input, else RGBS at full precision; gray material as luma replicated to R, G, B). gray: only luma comes
    back. to_rgb: resize arguments from the source's float form to RGB (YUV matrix). full: the source's range
    (`_source_range`), read once from frame 0."""

    src: vs.VideoNode
    rgb: vs.VideoNode
    gray: bool
    float_format: int
    full: bool | None = None
    to_yuv: dict[str, Any] = field(default_factory=dict)


def _float_format(fmt: vs.VideoFormat) -> int:
    """The source's family and subsampling in 32-bit float (lossless for integer samples up to 16 bit)."""
    return core.query_video_format(fmt.color_family, vs.FLOAT, 32, fmt.subsampling_w, fmt.subsampling_h).id


def _range(full: bool) -> int:
    return vs.RANGE_FULL if full else vs.RANGE_LIMITED


def _as_float(clip: vs.VideoNode, float_format: int, full: bool | None) -> vs.VideoNode:
    if clip.format.id == float_format:
        return clip
    kw = {} if full is None else {"range_in": _range(full), "range": _range(full)}
    return clip.resize.Point(format=float_format, **kw)


def _source_range(fmt: vs.VideoFormat, props0: Mapping[str, Any]) -> bool | None:
    """Full range for integer YUV/GRAY per `_Range` of frame 0 (YUV default limited, GRAY default full); None for
    RGB/float."""
    if fmt.sample_type == vs.FLOAT or fmt.color_family == vs.RGB:
        return None
    return P.is_full_range(props0, default=fmt.color_family == vs.GRAY)


def is_gray(rgb: np.ndarray, threshold: float = GRAY_THRESHOLD) -> bool:
    """The official test: mean over channel pairs of var(channel difference), in 8-bit units, <= threshold.
    rgb: (H, W, 3) uint8, or float in [0, 1]."""
    img = np.asarray(rgb, np.float64) * (1.0 if np.asarray(rgb).dtype == np.uint8 else 255.0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return float(np.var(r - g) + np.var(g - b) + np.var(b - r)) / 3.0 <= threshold


def _rgb_of(frame: vs.VideoFrame) -> np.ndarray:
    """(H, W, 3): uint8 for RGB24, float32 for float RGB."""
    img = np.stack([np.asarray(frame[p]) for p in range(3)], axis=-1)
    return img if img.dtype == np.uint8 else img.astype(np.float32)


def _looks_gray(rgb: vs.VideoNode) -> bool:
    """gray="auto": the first, middle and last frame all pass the official test."""
    n = rgb.num_frames
    for i in sorted({0, n // 2, n - 1}):
        with rgb.get_frame(i) as f:
            if not is_gray(_rgb_of(f)):
                return False
    return True


def working_clip(clip: vs.VideoNode, matrix_in_s: str | None = None, gray: bool | str = "auto") -> Working:
    """Prepare `clip` (any constant RGB/YUV/GRAY format) for restoration; see `Working`."""
    fmt = clip.format
    props0: dict[str, Any] = {}
    if fmt.color_family != vs.RGB:  # _Range (and YUV's _Matrix) from frame 0: one synchronous read, at build time
        with clip.get_frame(0) as f0:
            props0 = dict(f0.props)
    full = _source_range(fmt, props0)
    ffmt = _float_format(fmt)
    if fmt.color_family == vs.GRAY:
        luma = _as_float(clip, ffmt, full)
        return Working(clip, core.std.ShufflePlanes(luma, [0, 0, 0], vs.RGB), True, ffmt, full)
    if fmt.color_family == vs.RGB:
        rgb = clip if fmt.id in (vs.RGB24, vs.RGBS) else clip.resize.Point(format=vs.RGBS)
        flat = gray is True or (gray == "auto" and _looks_gray(rgb))
        if flat:
            log.info("keep: %s restored as gray (the face layer's luma on R, G, B)", fmt.name)
        return Working(clip, rgb, flat, ffmt, full)
    # YUV: honour _Matrix (or matrix_in_s) both ways
    matrix = props0.get(P.MATRIX)
    chromaloc = props0.get("_ChromaLocation")
    if matrix_in_s is None and (matrix is None or int(matrix) == 2):  # 2 = unspecified
        raise _fail(
            f"{fmt.name} input has no usable _Matrix frame property; pass matrix_in_s='709' (or '170m', '2020ncl', ...) "
            "or convert to RGBS yourself, e.g. core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')"
        )
    to_yuv: dict[str, Any] = {"matrix_s": matrix_in_s} if matrix_in_s else {"matrix": int(matrix)}
    if chromaloc is not None:  # the layer's chroma sited like the source's
        to_yuv["chromaloc"] = int(chromaloc)
    src_f = _as_float(clip, ffmt, full)
    rgb = src_f.resize.Bicubic(format=vs.RGBS, matrix_in_s=matrix_in_s) if matrix_in_s else src_f.resize.Bicubic(format=vs.RGBS)
    flat = gray is True or (gray == "auto" and _looks_gray(rgb))
    if flat:  # the luma itself, replicated: exactly the RGB of a pixel with neutral chroma
        log.info("keep: %s restored as gray (luma only, chroma untouched)", fmt.name)
        rgb = core.std.ShufflePlanes(src_f, [0, 0, 0], vs.RGB)
    return Working(clip, rgb, flat, ffmt, full, to_yuv)


def _gray_of(layer: vs.VideoNode) -> vs.VideoNode:
    """GRAYS luma of an RGBS layer with the official bgr2gray weights."""
    r, g, b = (core.std.ShufflePlanes(layer, p, vs.GRAY) for p in range(3))
    wr, wg, wb = GRAY_WEIGHTS
    return core.std.Expr([r, g, b], f"x {wr} * y {wg} * + z {wb} * +")


def compose(work: Working, layer: vs.VideoNode, alpha: vs.VideoNode, upscale: int = 1) -> vs.VideoNode:
    """The source with the faces merged in, in the source's format. layer: RGBS colour, alpha: GRAYS weight, both
    at the output size (upscale x the source). Samples whose (resampled) alpha is 0 equal the source's
    (upscale 1; with upscale > 1 the background is the source resized bilinearly)."""
    src = work.src
    fmt = src.format
    full = work.full
    width, height = layer.width, layer.height
    bg = _as_float(src, work.float_format, full)
    if (bg.width, bg.height) != (width, height):
        bg = bg.resize.Bilinear(width=width, height=height)
    family = fmt.color_family
    if family == vs.GRAY:
        out = core.std.Expr([bg, _gray_of(layer), alpha], BLEND)
    elif family == vs.RGB:
        top = layer
        if work.gray:  # flat-chroma RGB stays flat
            top = core.std.ShufflePlanes(_gray_of(layer), [0, 0, 0], vs.RGB)
        weight = core.std.ShufflePlanes(alpha, [0, 0, 0], vs.RGB)
        out = core.std.Expr([bg, top, weight], BLEND)
    else:
        a444 = core.std.ShufflePlanes(alpha, [0, 0, 0], vs.YUV)
        weight = a444 if a444.format.id == work.float_format else a444.resize.Bilinear(format=work.float_format)
        if work.gray:  # luma only; chroma planes are the source's
            y = _gray_of(layer)
            top = core.std.ShufflePlanes([y, bg, bg], [0, 1, 2], vs.YUV)
            out = core.std.Expr([bg, top, weight], [BLEND, "x"])
        else:
            top = layer.resize.Bicubic(format=work.float_format, **work.to_yuv)
            out = core.std.Expr([bg, top, weight], BLEND)
    if out.format.id != fmt.id:
        kw = {} if full is None else {"range_in": _range(full), "range": _range(full)}
        out = out.resize.Point(format=fmt.id, **kw)
    return out


def mask_out(alpha: vs.VideoNode) -> vs.VideoNode:
    """The paste alpha for users: GRAYS at the output size, 0 = source untouched, 1 = restored face only."""
    return alpha


def split_layer(stacked: vs.VideoNode) -> tuple[vs.VideoNode, vs.VideoNode]:
    """(RGBS colour, GRAYS alpha) from a GRAYS clip holding R, G, B, alpha stacked vertically (one render per frame
    fills all four, see frames.write_layer)."""
    h = stacked.height // 4
    planes = [core.std.Crop(stacked, top=i * h, bottom=(3 - i) * h) for i in range(4)]
    return core.std.ShufflePlanes(planes[:3], [0, 0, 0], vs.RGB), planes[3]


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
        out.props[P.SCENE_CHANGE_PREV] = int(n > 0 and is_cut(_rgb_of(f[1]), _rgb_of(cur)))
        return out

    return core.std.ModifyFrame(clip, clips=[clip, prev], selector=flag)
