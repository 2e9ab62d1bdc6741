"""Decoded PyAV frames in their own pixel format, handed to the one composer (`vs_keep.planes`): the model's RGB
view and the restored faces merged back into the untouched samples (what `vs-keep restore` does with video files;
the VapourSynth filter calls the same functions on its frames' planes, so both give the same frames).

Packed formats are shuffled losslessly to planar ones first; the planes are then read in canonical order (R, G, B /
Y, U, V / Y) with the frame's range and matrix (swscale's default, BT.601, when untagged). A lossless encoder
gives back the input bit for bit outside the faces. PyAV is imported inside functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .planes import PlaneFormat, merge_faces, upscale_planes
from .planes import to_rgb as planes_to_rgb

__all__ = ["PLANAR_OF", "convert", "copy_tags", "merge_into_frame", "to_rgb"]

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


def _matrix(frame: Any) -> int:
    return _SWS_MATRIX.get(int(frame.colorspace or 0), 5)


def _plane_format(frame: Any) -> PlaneFormat:
    """The composer's view of a planar frame: family, depth, subsampling, range and matrix."""
    fmt = frame.format
    kind = _kind(fmt)
    sub = (0, 0)
    if kind == "yuv":  # log2 factor that takes the luma size to the chroma plane's (rounded up, as FFmpeg does)
        luma, chroma = frame.planes[0], frame.planes[1]
        sub = tuple(next(k for k in range(3) if -(-big // (1 << k)) == small)
                    for big, small in ((luma.width, chroma.width), (luma.height, chroma.height)))
    return PlaneFormat(kind, fmt.components[0].bits, _dtype(fmt).kind == "f", sub[0], sub[1], _range(frame) == 2,
                       _matrix(frame) if kind == "yuv" else 1)


def _order(fmt: Any) -> list[int]:
    """Plane indices in canonical order (R, G, B first for RGB formats), then any other plane."""
    first = [c.plane for c in fmt.components[:3]] if fmt.is_rgb else list(range(min(3, len(fmt.components))))
    return first + [i for i in range(len({c.plane for c in fmt.components})) if i not in first]


def _planes(frame: Any) -> list[np.ndarray]:
    return [_plane(frame, i) for i in _order(frame.format)]


def to_rgb(frame: Any, gray: bool = False) -> np.ndarray:
    """(H, W, 3) RGB for detection and the model (`planes.to_rgb`: uint8 for 8-bit sources, else float32 in
    [0, 1]); gray: restore YUV as its luma (gray="auto" decided by the caller)."""
    src = _planar(frame)
    return planes_to_rgb(_planes(src), _plane_format(src), gray)


def merge_into_frame(frame: Any, color: np.ndarray | None, alpha: np.ndarray | None, *, gray: bool = False,
                     strength: float = 1.0, background: Any = None, upscale: int = 1) -> Any:
    """A new frame in `frame`'s own pixel format (and tags, pts) with the faces merged in (`planes.merge_faces`):
    color (H, W, 3) float RGB and alpha (H, W) at the output size. The background is `background` (a decoded
    frame of the output size), else `frame` resized bilinearly by `upscale` (`planes.upscale_planes`; with no
    faces, the background of `--upscale`). With nothing merged and no resize, the decoded frame itself is returned."""
    import av

    src = _planar(frame)
    pf = _plane_format(src)
    if background is not None:
        back_frame = _planar(background)
        if back_frame.format.name != src.format.name:
            back_frame = back_frame.reformat(format=src.format.name)
        back = _planes(back_frame)
    else:
        back = upscale_planes(_planes(src), pf, upscale)
    planes = merge_faces(back, pf, color, alpha, gray=gray, strength=strength)
    if background is None and upscale == 1 and all(a is b for a, b in zip(planes, back)):
        return frame
    height, width = planes[0].shape
    out = av.VideoFrame(width, height, src.format.name)
    for i, plane in zip(_order(src.format), planes):
        _plane(out, i)[...] = plane
    copy_tags(src, out)
    if src.format.name != frame.format.name:  # back to the packed layout of the input
        out = out.reformat(format=frame.format.name, src_color_range=_range(frame), dst_color_range=_range(frame))
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
    if src.time_base is not None:
        dst.time_base = src.time_base
    dst.colorspace = src.colorspace
    dst.color_range = src.color_range
    dst.color_primaries = src.color_primaries
    dst.color_trc = src.color_trc
