"""The one composer: a frame as numpy planes in its own format, what the model reads of it, and restored faces
merged back into it. The VapourSynth filter (`vs_keep.plugin.frames`) and `vs-keep restore` (`vs_keep.pixels`)
both hand their frames' planes to these functions, so the same options give the same frames.

Film work uses 10/16-bit YUV, RGB48 or GRAY scans; a restorer must not touch what it does not restore. `merge_faces`
starts from the input planes and changes a sample only where the face alpha (scaled by `strength`; box-averaged
over the footprint of a subsampled chroma sample) is above 0, to `s + alpha·(layer − s)`, rounded at the plane's
own precision; everywhere else the output is the input bit for bit. The colour layer is converted to the plane's
format here (matrix and range as H.273 codes, chroma box-averaged like the alpha), not by a scaler library, so both
front ends agree to the bit. Gray material (GRAY formats, or flat chroma: `looks_gray`) is restored on its luma
replicated to RGB and only the luma comes back, with the official `bgr2gray` weights. Chroma is treated as
centre-sited. Planes are in canonical order: R, G, B / Y, U, V / Y, then any extra (alpha) planes, kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = [
    "GRAY_THRESHOLD", "GRAY_WEIGHTS", "MATRICES", "MATRIX_NAMES", "PlaneFormat", "is_gray", "looks_gray",
    "merge_faces", "rgb_planes", "to_rgb", "upscale_planes",
]

#: official `bgr2gray` weights (R, G, B) for the restored face of gray input
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: official `is_gray` threshold: mean variance of the channel differences, 8-bit units
GRAY_THRESHOLD = 10.0
#: YUV matrices by H.273 code (VapourSynth `_Matrix`, FFmpeg `colorspace`): (Kr, Kb)
MATRICES = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
            9: (0.2627, 0.0593)}
#: zimg's `matrix_in_s` names of those codes
MATRIX_NAMES = {"709": 1, "fcc": 4, "470bg": 5, "170m": 6, "240m": 7, "2020ncl": 9}


@dataclass(frozen=True)
class PlaneFormat:
    """What the samples of a frame's planes mean. family: "rgb", "yuv" or "gray"; bits: per sample (16/32 for
    float); sub_w / sub_h: log2 chroma subsampling; full: full range (integer YUV/GRAY; RGB is always full);
    matrix: H.273 code (YUV only, a key of MATRICES)."""

    family: str
    bits: int
    is_float: bool
    sub_w: int = 0
    sub_h: int = 0
    full: bool = True
    matrix: int = 1

    def __post_init__(self) -> None:
        if self.family == "yuv" and self.matrix not in MATRICES:
            raise InputError(f"YUV matrix {self.matrix} is not supported; tag the source with one of "
                             f"{', '.join(MATRIX_NAMES)} (BT.709, BT.601, BT.2020 non-constant, ...)")

    def luma_scale(self) -> tuple[float, float]:
        """(offset, gain): code = offset + gain·v for luma / RGB / gray values v in [0, 1]."""
        if self.is_float:
            return 0.0, 1.0
        if self.full or self.family == "rgb":
            return 0.0, float((1 << self.bits) - 1)
        return float(16 << (self.bits - 8)), float(219 << (self.bits - 8))

    def chroma_scale(self) -> tuple[float, float]:
        """(offset, gain): code = offset + gain·c for colour differences c in [-0.5, 0.5]."""
        if self.is_float:
            return 0.0, 1.0
        mid = float(1 << (self.bits - 1))
        return (mid, float((1 << self.bits) - 1)) if self.full else (mid, float(224 << (self.bits - 8)))

    @property
    def top(self) -> float | None:
        """The largest integer code (None for float)."""
        return None if self.is_float else float((1 << self.bits) - 1)


def _kg(kr: float, kb: float) -> float:
    return 1.0 - kr - kb


def _normalised(plane: np.ndarray, offset: float, gain: float) -> np.ndarray:
    x = plane.astype(np.float32)
    x -= np.float32(offset)
    x /= np.float32(gain)
    return x


def rgb_planes(planes: Sequence[np.ndarray], fmt: PlaneFormat, gray: bool = False) -> list[np.ndarray]:
    """R, G, B planes that detection and the model read: uint8 for 8-bit integer sources (what the official script
    reads), else float32 in [0, 1]. GRAY formats, and YUV with `gray`, give their luma replicated (the official
    gray handling); chroma is upsampled bilinearly (centre-sited). Whole-plane OpenCV passes: a 1080p frame costs
    a few ms, not the ~10 full-frame numpy temporaries of the textbook formula."""
    import cv2

    eight = fmt.bits == 8 and not fmt.is_float
    if fmt.family == "rgb" and eight:
        return [np.ascontiguousarray(p) for p in planes[:3]]
    off, gain = fmt.luma_scale()
    if fmt.family == "rgb":
        rgb = [_normalised(p, off, gain) for p in planes[:3]]
    elif fmt.family == "gray" or gray:
        rgb = [_normalised(planes[0], off, gain)]
    else:
        y = _normalised(planes[0], off, gain)
        coff, cgain = fmt.chroma_scale()
        u, v = (_normalised(p, coff, cgain) for p in planes[1:3])
        if u.shape != y.shape:
            u, v = (cv2.resize(c, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR) for c in (u, v))
        kr, kb = MATRICES[fmt.matrix]
        kg = _kg(kr, kb)
        r = cv2.scaleAdd(v, 2 * (1 - kr), y)
        b = cv2.scaleAdd(u, 2 * (1 - kb), y)
        g = cv2.scaleAdd(v, -2 * kr * (1 - kr) / kg, cv2.scaleAdd(u, -2 * kb * (1 - kb) / kg, y))
        rgb = [r, g, b]
    out = []
    for c in rgb:
        if eight:  # convertScaleAbs rounds to nearest (even) and saturates at 255; negatives are cut first
            out.append(cv2.convertScaleAbs(np.maximum(c, 0.0, out=c), alpha=255.0))
        else:
            out.append(np.clip(c, 0.0, 1.0, out=c))
    return out * 3 if len(out) == 1 else out


def to_rgb(planes: Sequence[np.ndarray], fmt: PlaneFormat, gray: bool = False) -> np.ndarray:
    """`rgb_planes` as one (H, W, 3) array (cv2.merge: an interleaving np.stack costs ~3x more)."""
    import cv2

    return cv2.merge(rgb_planes(planes, fmt, gray))


def is_gray(rgb: np.ndarray) -> bool:
    """The official test: mean over channel pairs of var(channel difference), in 8-bit units, <= GRAY_THRESHOLD.
    rgb: (H, W, 3) uint8, or float in [0, 1]."""
    img = np.asarray(rgb, np.float64) * (1.0 if np.asarray(rgb).dtype == np.uint8 else 255.0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return float(np.var(r - g) + np.var(g - b) + np.var(b - r)) / 3.0 <= GRAY_THRESHOLD


def looks_gray(frame_rgb: Callable[[int], np.ndarray], num_frames: int) -> bool:
    """gray="auto": the first, middle and last frame (`frame_rgb(n)`: RGB as `to_rgb` gives it, gray=False) all
    pass `is_gray` (read in that order, up to the first colour one)."""
    return all(is_gray(frame_rgb(n)) for n in sorted({0, num_frames // 2, num_frames - 1}))


def _shrink(x: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Box average over sy x sx blocks (x's size a multiple of them): a subsampled chroma sample's footprint."""
    if sy == sx == 1:
        return x
    h, w = x.shape[0] // sy, x.shape[1] // sx
    return x.reshape(h, sy, w, sx).mean(axis=(1, 3), dtype=np.float32)


def _layer_codes(fmt: PlaneFormat, color: np.ndarray, gray: bool) -> list[np.ndarray]:
    """The colour layer (h, w, 3) float RGB as full-resolution code values of each restored plane."""
    off, gain = fmt.luma_scale()
    if fmt.family == "gray" or gray:
        wr, wg, wb = (np.float32(w) for w in GRAY_WEIGHTS)
        y = np.float32(off) + np.float32(gain) * (color[..., 0] * wr + color[..., 1] * wg + color[..., 2] * wb)
        return [y, y, y] if fmt.family == "rgb" else [y]
    if fmt.family == "rgb":
        return [np.float32(off) + np.float32(gain) * color[..., c] for c in range(3)]
    kr, kb = MATRICES[fmt.matrix]
    r, g, b = color[..., 0], color[..., 1], color[..., 2]
    yn = np.float32(kr) * r + np.float32(_kg(kr, kb)) * g + np.float32(kb) * b
    coff, cgain = fmt.chroma_scale()
    u = np.float32(coff) + np.float32(cgain) * ((b - yn) / np.float32(2 * (1 - kb)))
    v = np.float32(coff) + np.float32(cgain) * ((r - yn) / np.float32(2 * (1 - kr)))
    return [np.float32(off) + np.float32(gain) * yn, u, v]


def merge_faces(planes: Sequence[np.ndarray], fmt: PlaneFormat, color: np.ndarray | None, alpha: np.ndarray | None,
                *, gray: bool = False, strength: float = 1.0) -> list[np.ndarray]:
    """New planes: `planes` with the faces merged in. color (H, W, 3) float RGB and alpha (H, W) float in [0, 1] at
    the size of plane 0; the alpha is scaled by `strength`. Samples whose alpha is 0 are the input's, bit for bit
    (with no alpha, or strength 0, the input planes themselves are returned)."""
    planes = list(planes)
    if alpha is None or color is None or strength <= 0:
        return planes
    if alpha.shape != planes[0].shape:
        raise InputError(f"face layer is {alpha.shape[::-1]}, the frame {planes[0].shape[::-1]}: merge at the output size")
    rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
    if rows.size == 0:
        return planes
    sy, sx = (1 << fmt.sub_h, 1 << fmt.sub_w) if fmt.family == "yuv" else (1, 1)
    H, W = alpha.shape
    # the faces' bounding box, widened to whole chroma footprints (edge-padded past odd frame sizes)
    y0, x0 = rows[0] // sy * sy, cols[0] // sx * sx
    y1, x1 = -(-(rows[-1] + 1) // sy) * sy, -(-(cols[-1] + 1) // sx) * sx
    pad = ((0, max(y1 - H, 0)), (0, max(x1 - W, 0)))
    a = np.pad(np.asarray(alpha[y0:y1, x0:x1], np.float32), pad, mode="edge")
    c = np.pad(np.asarray(color[y0:y1, x0:x1], np.float32), pad + ((0, 0),), mode="edge")
    if strength != 1.0:
        a = a * np.float32(strength)
    layer = _layer_codes(fmt, c, gray)
    out = []
    for i, src in enumerate(planes):
        if i >= len(layer):  # chroma of gray YUV, or an alpha plane: the input's
            out.append(src)
            continue
        fy, fx = (sy, sx) if (fmt.family == "yuv" and i > 0) else (1, 1)
        ap, lp = _shrink(a, fy, fx), _shrink(layer[i], fy, fx)
        py0, px0 = y0 // fy, x0 // fx
        s = src[py0:py0 + ap.shape[0], px0:px0 + ap.shape[1]]
        ap, lp = ap[: s.shape[0], : s.shape[1]], lp[: s.shape[0], : s.shape[1]]
        s32 = s.astype(np.float32)
        blend = s32 + ap * (lp - s32)
        if fmt.top is not None:
            blend = np.clip(np.rint(blend), 0.0, fmt.top)
        plane = src.copy()
        plane[py0:py0 + s.shape[0], px0:px0 + s.shape[1]] = np.where(ap > 0, blend.astype(src.dtype), s)
        out.append(plane)
    return out


def upscale_planes(planes: Sequence[np.ndarray], fmt: PlaneFormat, factor: int) -> list[np.ndarray]:
    """Each plane resized bilinearly to `factor` x the frame in its own format (the background of upscale > 1
    without a background clip); chroma planes to the subsampled output size, extra planes too."""
    import cv2

    if factor == 1:
        return list(planes)
    H, W = planes[0].shape[0] * factor, planes[0].shape[1] * factor
    sy, sx = (1 << fmt.sub_h, 1 << fmt.sub_w) if fmt.family == "yuv" else (1, 1)
    out = []
    for i, p in enumerate(planes):
        fy, fx = (sy, sx) if (fmt.family == "yuv" and i in (1, 2)) else (1, 1)
        big = cv2.resize(p.astype(np.float32), (-(-W // fx), -(-H // fy)), interpolation=cv2.INTER_LINEAR)
        if fmt.top is not None:
            big = np.clip(np.rint(big), 0.0, fmt.top)
        out.append(big.astype(p.dtype))
    return out
