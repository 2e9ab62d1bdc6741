"""The filter's adapter of the one composer (`vs_keep.planes`), as `vs_keep.pixels` is the CLI's: VideoFrame <->
numpy planes, what the model sees of the source clip, and how its faces go back into the source.

    work = working_clip(clip, matrix_in_s, gray)    # RGB the detector/model read (RGB24 for 8-bit sources, else RGBS)
    ... restore: faces as a stacked colour + alpha layer at the output size (write_layer) ...
    out = merge_into_clip(work, stacked, upscale)   # the source's own format, merged with the alpha
    mask = mask_out(stacked, strength)              # the alpha for users (GRAYS)

Both directions are `vs_keep.planes` on the frames' planes, the functions `vs-keep restore` calls on its decoded
frames: the same options give the same frames, and every sample the alpha does not reach is the input's bit for bit.
Errors are `InputError`s; `keep()` reports them as `vs.Error("keep: ...")`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_keep.errors import InputError
from vs_keep.planes import MATRICES, MATRIX_NAMES, PlaneFormat, looks_gray, merge_faces, rgb_planes, to_rgb, upscale_planes

from . import props as P

log = logging.getLogger("vs_keep.plugin")
core = vs.core


def plane_format(fmt: vs.VideoFormat, full: bool | None, matrix: int = 1) -> PlaneFormat:
    """The composer's view of a VapourSynth format (full: the source's range, None for RGB/float)."""
    family = {vs.RGB: "rgb", vs.YUV: "yuv", vs.GRAY: "gray"}[fmt.color_family]
    return PlaneFormat(family, fmt.bits_per_sample, fmt.sample_type == vs.FLOAT, fmt.subsampling_w, fmt.subsampling_h,
                       True if full is None else full, matrix if family == "yuv" else 1)


def planes_of(frame: vs.VideoFrame) -> list[np.ndarray]:
    """Read-only views of every plane, in VapourSynth's order (R, G, B / Y, U, V / Y)."""
    return [np.asarray(frame[p]) for p in range(frame.format.num_planes)]


def write_planes(frame: vs.VideoFrame, planes: list[np.ndarray]) -> None:
    """Copy `planes` into a writable frame of the same format and size."""
    for p, plane in enumerate(planes):
        np.copyto(np.asarray(frame[p]), plane)


def frame_to_rgb(frame: vs.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 for RGB24, float32 for RGBS (the working clip's formats: in [0, 1], what detection and the
    model read). Copies: planes are read-only
    (cv2.merge: an interleaving np.stack costs ~10x more on a 1080p frame)."""
    import cv2

    return cv2.merge(planes_of(frame)[:3])


def write_rgb(frame: vs.VideoFrame, img: np.ndarray) -> None:
    """Write (H, W, 3) into a writable frame of matching size (dtype converted to the frame's sample type)."""
    for p in range(3):
        dst = np.asarray(frame[p])
        np.copyto(dst, img[..., p].astype(dst.dtype, copy=False))


def layer_clip(like: vs.VideoNode, width: int, height: int) -> vs.VideoNode:
    """Blank GRAYS clip (width, 4·height): the R, G, B planes of the face layer and its alpha, stacked vertically,
    so one render per frame fills all four (`read_layer` takes them apart)."""
    return core.std.BlankClip(like, width=width, height=4 * height, format=vs.GRAYS, keep=True)


def write_layer(frame: vs.VideoFrame, color: np.ndarray, alpha: np.ndarray) -> None:
    """Write (h, w, 3) colour and (h, w) alpha into a writable stacked GRAYS frame (see `layer_clip`)."""
    dst = np.asarray(frame[0])
    h = dst.shape[0] // 4
    for p in range(3):
        np.copyto(dst[p * h:(p + 1) * h], color[..., p], casting="same_kind")
    np.copyto(dst[3 * h:], alpha, casting="same_kind")


def read_layer(frame: vs.VideoFrame) -> tuple[np.ndarray, np.ndarray]:
    """(colour (h, w, 3) float32, alpha (h, w) float32) of a stacked layer frame: views of its samples, no copy
    (the composer reads only the faces' boxes)."""
    src = np.asarray(frame[0])
    h = src.shape[0] // 4
    return src[:3 * h].reshape(3, h, -1).transpose(1, 2, 0), src[3 * h:]


@dataclass(frozen=True, eq=False)
class Working:
    """A source clip prepared for restoration. rgb: what detection, alignment and the model read
    (`vs_keep.planes.to_rgb`: RGB24 for 8-bit integer sources, else RGBS in [0, 1]; gray material as luma
    replicated).
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
            raise InputError(f"matrix_in_s must be one of {', '.join(map(repr, MATRIX_NAMES))}, got {matrix_in_s!r}")
        return MATRIX_NAMES[matrix_in_s]
    matrix = props0.get(P.MATRIX)
    if matrix is None or int(matrix) not in MATRICES:  # absent, 2 (unspecified) or a matrix planes.py lacks
        raise InputError(
            f"{fmt.name} input has no usable _Matrix frame property (got {matrix}); pass matrix_in_s='709' (or "
            "'170m', '2020ncl', ...) or convert to RGBS yourself, e.g. "
            "core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')"
        )
    return int(matrix)


def working_clip(clip: vs.VideoNode, matrix_in_s: str | None = None, gray: bool | str = "auto") -> Working:
    """Prepare `clip` (any constant RGB/YUV/GRAY format) for restoration; see `Working`. gray="auto" reads the
    frames `planes.looks_gray` asks for here, at build time."""
    fmt = clip.format
    props0: dict[str, Any] = {}
    if fmt.color_family != vs.RGB:  # _Range (and YUV's _Matrix) from frame 0: one synchronous read, at build time
        with clip.get_frame(0) as f0:
            props0 = dict(f0.props)
    pf = plane_format(fmt, _source_range(fmt, props0), _matrix(fmt, props0, matrix_in_s))
    flat = pf.family == "gray" or gray is True
    if gray == "auto" and pf.family != "gray":

        def frame_rgb(n: int) -> np.ndarray:
            with clip.get_frame(n) as f:
                return to_rgb(planes_of(f), pf)

        flat = looks_gray(frame_rgb, clip.num_frames)
    if flat and pf.family != "gray":
        log.info("keep: %s restored as gray (the face layer's luma only)", fmt.name)
    if fmt.id == vs.RGB24:  # what rgb_planes gives: the planes themselves
        return Working(clip, clip, flat, pf)
    rgb_format = vs.RGB24 if (pf.bits == 8 and not pf.is_float) else vs.RGBS
    blank = core.std.BlankClip(clip, format=rgb_format, keep=True)

    def convert(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = f[0].copy()
        write_planes(out, rgb_planes(planes_of(f[1]), pf, flat))
        return out

    rgb = core.std.CopyFrameProps(blank.std.ModifyFrame([blank, clip], convert), clip)
    return Working(clip, rgb, flat, pf)


def merge_into_clip(work: Working, stacked: vs.VideoNode, upscale: int = 1, strength: float = 1.0,
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
    by `strength`, as `merge_into_clip` applies it)."""
    h = stacked.height // 4
    alpha = core.std.Crop(stacked, top=3 * h)
    return alpha if strength == 1.0 else core.std.Expr(alpha, f"x {float(strength)!r} *")
