"""VideoFrame <-> numpy for the RGB formats the filter works in (RGB24, RGBS, RGBH) and the stacked face layer."""

from __future__ import annotations

import numpy as np
import vapoursynth as vs


def frame_to_rgb(frame: vs.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 for RGB24, float32 (unclamped) for RGBS/RGBH. Copies: VapourSynth planes are read-only."""
    planes = [np.asarray(frame[p]) for p in range(3)]
    img = np.stack(planes, axis=-1)
    if img.dtype == np.float16:
        img = img.astype(np.float32)
    return img


def model_view(img: np.ndarray) -> np.ndarray:
    """What detection and alignment see: uint8 as is, float clamped to [0, 1] (YUV->RGB can leave that range)."""
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
    so one render per frame fills all four (compose.split_layer takes them apart)."""
    return vs.core.std.BlankClip(like, width=width, height=4 * height, format=vs.GRAYS, keep=True)


def write_layer(frame: vs.VideoFrame, color: np.ndarray, alpha: np.ndarray) -> None:
    """Write (h, w, 3) colour and (h, w) alpha into a writable stacked GRAYS frame (see `layer_clip`)."""
    dst = np.asarray(frame[0])
    h = dst.shape[0] // 4
    for p in range(3):
        np.copyto(dst[p * h:(p + 1) * h], color[..., p], casting="same_kind")
    np.copyto(dst[3 * h:], alpha, casting="same_kind")
