"""Decoded video frames in their own pixel format: the model's RGB view at full precision, and restored faces
merged back into the untouched samples (what `vs-keep restore` does with video files).

Film work uses 10/16-bit YUV, RGB (gbrp) or GRAY; a restorer that goes through rgb24 loses precision everywhere.
Here the model reads deeper sources through 16-bit RGB (8-bit ones as rgb24), and the output frame starts as a copy of the
decoded planes: a sample changes only where the face alpha (resampled to its plane by an area average) is above
0, to `s + alpha·(layer − s)` with the layer converted to the frame's own format, matrix and range. A lossless
encoder therefore gives back the input bit for bit outside the faces. PyAV is imported inside functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["GRAY_WEIGHTS", "PLANAR_OF", "compose", "convert", "copy_tags", "resize", "to_rgb"]

#: official `bgr2gray` weights (R, G, B) for the restored face of gray input
GRAY_WEIGHTS = np.float32([0.2989, 0.587, 0.114])
#: packed/semi-planar formats and the planar format holding the same samples (converted losslessly both ways)
PLANAR_OF = {
    "rgb24": "gbrp", "bgr24": "gbrp", "rgb0": "gbrp", "bgr0": "gbrp", "0rgb": "gbrp", "0bgr": "gbrp",
    "rgba": "gbrp", "bgra": "gbrp", "argb": "gbrp", "abgr": "gbrp", "rgb48le": "gbrp16le", "bgr48le": "gbrp16le",
    "nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "nv24": "yuv444p", "p010le": "yuv420p10le",
    "p016le": "yuv420p16le", "yuyv422": "yuv422p", "uyvy422": "yuv422p",
}
#: swscale's matrices by AVColorSpace (unspecified: swscale's default, BT.601, used both ways)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def _planar(frame: Any) -> Any:
    """The frame in a planar format with one component per plane (a lossless shuffle where needed)."""
    fmt = frame.format
    planes = {c.plane for c in fmt.components}
    if len(planes) == len(fmt.components) and not fmt.has_palette and not fmt.is_big_endian:
        return frame
    target = PLANAR_OF.get(fmt.name)
    if target is None:
        raise InputError(f"pixel format {fmt.name} is not supported; convert the input to a planar format (e.g. "
                         "yuv420p10le, yuv444p16le, gbrp16le, gray16le) first")
    return frame.reformat(format=target, src_color_range=_range(frame), dst_color_range=_range(frame))


def _range(frame: Any) -> int:
    """MPEG (limited) = 1 or JPEG (full) = 2; untagged: limited for YUV/GRAY video, full for RGB."""
    value = int(frame.color_range or 0)
    if frame.format.name.startswith("yuvj"):
        return 2
    if value in (1, 2):
        return value
    return 2 if frame.format.is_rgb else 1


def _dtype(fmt: Any) -> np.dtype:
    bits = fmt.components[0].bits
    name = fmt.name
    if "f32" in name:
        return np.dtype("<f4")
    if "f16" in name:
        return np.dtype("<f2")
    return np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")


def _plane(frame: Any, i: int) -> np.ndarray:
    """A view of plane i (writable when the frame's buffer is)."""
    p = frame.planes[i]
    dt = _dtype(frame.format)
    arr = np.frombuffer(memoryview(p), dt)
    return arr.reshape(p.height, p.line_size // dt.itemsize)[:, : p.width]


def _kind(fmt: Any) -> str:
    if fmt.is_rgb:
        return "rgb"
    return "gray" if len(fmt.components) == 1 else "yuv"


def _scale(fmt: Any, full: bool) -> tuple[float, float]:
    """(offset, gain) mapping a normalised value v in [0, 1] to sample codes: code = offset + gain·v."""
    if _dtype(fmt).kind == "f":
        return 0.0, 1.0
    bits = fmt.components[0].bits
    if full:
        return 0.0, float((1 << bits) - 1)
    return float(16 << (bits - 8)), float(219 << (bits - 8))


def _matrix(frame: Any) -> int:
    return _SWS_MATRIX.get(int(frame.colorspace or 0), 5)


def to_rgb(frame: Any) -> np.ndarray:
    """(H, W, 3) RGB for detection and the model: uint8 for 8-bit sources (what the official script reads; a
    linear pass buffers a chunk plus its look-ahead, so 4x the memory would buy nothing), else float32 in [0, 1]
    through 16 bits per sample (never 8). Gray formats give their luma replicated (the official gray handling)."""
    src = _planar(frame)
    fmt = src.format
    deep = _dtype(fmt) != np.uint8
    if _kind(fmt) == "gray":
        off, gain = _scale(fmt, _range(src) == 2)
        y = np.clip((_plane(src, 0).astype(np.float32) - off) / gain, 0.0, 1.0)
        y = y if deep else np.rint(y * 255.0).astype(np.uint8)
        return np.repeat(y[..., None], 3, axis=2)
    rgb = src.reformat(format="rgb48le" if deep else "rgb24", src_colorspace=_matrix(src), src_color_range=_range(src),
                       dst_color_range=2)
    return rgb.to_ndarray().astype(np.float32) / 65535.0 if deep else rgb.to_ndarray()


def _layer_planes(src: Any, color: np.ndarray) -> list[np.ndarray]:
    """The colour layer (H, W, 3) float RGB in `src`'s planar format, matrix and range, as float planes."""
    import av

    fmt = src.format
    kind = _kind(fmt)
    full = _range(src) == 2
    if kind == "gray":
        off, gain = _scale(fmt, full)
        return [off + gain * (color @ GRAY_WEIGHTS)]
    if kind == "rgb":
        off, gain = _scale(fmt, full)
        out: list[np.ndarray | None] = [None] * len(fmt.components)
        for c, comp in enumerate(fmt.components[:3]):
            out[comp.plane] = off + gain * color[..., c]
        return out  # type: ignore[return-value]
    rgb48 = np.ascontiguousarray(np.clip(np.rint(color * 65535.0), 0, 65535).astype(np.uint16))
    layer = av.VideoFrame.from_ndarray(rgb48, format="rgb48le").reformat(
        format=fmt.name, src_color_range=2, dst_colorspace=_matrix(src), dst_color_range=_range(src),
    )
    return [_plane(layer, i).astype(np.float32) for i in range(len(layer.planes))]


def compose(frame: Any, color: np.ndarray | None, alpha: np.ndarray | None) -> Any:
    """A new frame in `frame`'s own pixel format (and tags, pts) with the faces merged in: color (H, W, 3) float RGB,
    alpha (H, W) float in [0, 1]. Samples whose (area-resampled) alpha is 0 are copied unchanged; with no alpha,
    the decoded frame itself is returned."""
    import av
    import cv2

    if alpha is None or color is None or not np.any(alpha > 0):
        return frame
    src = _planar(frame)
    fmt = src.format
    if alpha.shape != (src.height, src.width):
        raise InputError(f"face layer is {alpha.shape[::-1]}, the frame {src.width}x{src.height}: resize the frame "
                         "to the output size first (pixels.resize)")
    out = av.VideoFrame(src.width, src.height, fmt.name)
    layer = _layer_planes(src, color)
    dt = _dtype(fmt)
    top = None if dt.kind == "f" else float((1 << fmt.components[0].bits) - 1)
    for i in range(len(src.planes)):
        s = _plane(src, i)
        dst = _plane(out, i)
        a = alpha if s.shape == alpha.shape else cv2.resize(alpha, (s.shape[1], s.shape[0]), interpolation=cv2.INTER_AREA)
        if i >= len(layer) or layer[i] is None:  # alpha plane of a format with one: kept
            dst[...] = s
            continue
        blend = s.astype(np.float32) + a * (layer[i] - s.astype(np.float32))
        if top is not None:
            blend = np.clip(np.rint(blend), 0.0, top)
        dst[...] = np.where(a > 0, blend.astype(dt), s)
    copy_tags(src, out)
    if src is not frame:  # back to the packed layout of the input
        out = out.reformat(format=frame.format.name, src_color_range=_range(frame), dst_color_range=_range(frame))
        copy_tags(frame, out)
    return out


def resize(frame: Any, width: int, height: int) -> Any:
    """Bilinear resize in the frame's own format (the upscaled background of `--upscale`), tags kept."""
    if (frame.width, frame.height) == (width, height):
        return frame
    out = frame.reformat(width=width, height=height, interpolation="BILINEAR", src_color_range=_range(frame),
                         dst_color_range=_range(frame))
    copy_tags(frame, out)
    return out


def convert(frame: Any, pix_fmt: str, like: Any) -> Any:
    """`frame` in another pixel format (`--pix-fmt`, or RGB from --aligned/image input into the source's format),
    converted with the source's matrix and range (`like`: a video.StreamFormat) and tagged like the source."""
    import av

    target = av.VideoFormat(pix_fmt)
    dst_range = int(like.color_range) if like.color_range in (1, 2) else (2 if target.is_rgb else 1)
    out = frame.reformat(format=pix_fmt, src_colorspace=_matrix(frame), src_color_range=_range(frame),
                         dst_colorspace=_SWS_MATRIX.get(int(like.colorspace or 0), 5), dst_color_range=dst_range)
    out.pts, out.time_base = frame.pts, frame.time_base
    out.colorspace, out.color_range = (0 if target.is_rgb else like.colorspace), dst_range
    out.color_primaries, out.color_trc = like.color_primaries, like.color_trc
    return out


def copy_tags(src: Any, dst: Any) -> None:
    """Timestamp and the four colour tags (matrix, primaries, transfer, range)."""
    dst.pts = src.pts
    dst.time_base = src.time_base
    dst.colorspace = src.colorspace
    dst.color_range = src.color_range
    dst.color_primaries = src.color_primaries
    dst.color_trc = src.color_trc
