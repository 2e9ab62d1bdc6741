"""VideoFrame <-> numpy: a frame's planes for the composer (`vs_keep.planes`), the RGB frames the filter works in
(RGB24, RGBS) and the stacked face layer."""

from __future__ import annotations

import numpy as np
import vapoursynth as vs

from vs_keep.planes import PlaneFormat


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
    """(H, W, 3) uint8 for RGB24, float32 for RGBS (the working clip's formats). Copies: planes are read-only
    (cv2.merge: an interleaving np.stack costs ~10x more on a 1080p frame)."""
    import cv2

    return cv2.merge(planes_of(frame)[:3])


def model_view(img: np.ndarray) -> np.ndarray:
    """What detection and alignment see: uint8 as is, float clamped to [0, 1]."""
    if img.dtype == np.uint8:
        return img
    return np.clip(img, 0.0, 1.0)


def write_rgb(frame: vs.VideoFrame, img: np.ndarray) -> None:
    """Write (H, W, 3) into a writable frame of matching size (dtype converted to the frame's sample type)."""
    for p in range(3):
        dst = np.asarray(frame[p])
        np.copyto(dst, img[..., p].astype(dst.dtype, copy=False))


def layer_clip(like: vs.VideoNode, width: int, height: int) -> vs.VideoNode:
    """Blank GRAYS clip (width, 4·height): the R, G, B planes of the face layer and its alpha, stacked vertically,
    so one render per frame fills all four (`read_layer` takes them apart)."""
    return vs.core.std.BlankClip(like, width=width, height=4 * height, format=vs.GRAYS, keep=True)


def write_layer(frame: vs.VideoFrame, color: np.ndarray, alpha: np.ndarray) -> None:
    """Write (h, w, 3) colour and (h, w) alpha into a writable stacked GRAYS frame (see `layer_clip`)."""
    dst = np.asarray(frame[0])
    h = dst.shape[0] // 4
    for p in range(3):
        np.copyto(dst[p * h:(p + 1) * h], color[..., p], casting="same_kind")
    np.copyto(dst[3 * h:], alpha, casting="same_kind")


def read_layer(frame: vs.VideoFrame) -> tuple[np.ndarray, np.ndarray]:
    """(colour (h, w, 3) float32, alpha (h, w) float32) of a stacked layer frame."""
    src = np.asarray(frame[0])
    h = src.shape[0] // 4
    import cv2

    return cv2.merge([src[p * h:(p + 1) * h] for p in range(3)]), src[3 * h:]
