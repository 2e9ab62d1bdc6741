"""Paste restored faces back into the (optionally upscaled) frame with the official soft square mask.

Official mask (CodeFormer/KEEP helper): warp a face-sized square of ones back into the frame, erode it by a
(2·upscale)² kernel (that eroded mask also multiplies the face), erode again by 2·w_edge with
w_edge = int(sqrt(area)) // 20, blur with a (2·w_edge + 1)² Gaussian (σ from the size); a ParseNet mask, when
given, is warped too and the minimum of the two is used. Faces are blended one after another into one canvas, so
overlapping faces neither leave seams nor blend twice.

We compute everything only inside each face's bounding box (plus the blur margin) instead of on the full frame:
the masks are zero outside, so the values are the same up to cv2's 1/32-pixel coordinate rounding, at a fraction
of the cost (exact mode works on full frames for bit parity). The canvas stays float until one final rounding. Faces are usually smaller in the frame than the 512 crop, so pasting shrinks the
restored face; like alignment, the default low-pass filters it first so its generated fine texture does not alias
and shimmer as the face moves. `exact=True` reproduces the official arithmetic: plain bilinear, the +0.5·upscale
translation offset, the mask area measured from the eroded mask, truncation to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from ..geometry import antialias_sigma, paste_geometry, warp_scale

__all__ = [
    "FaceLayer", "FacePaste", "blend_face", "face_region", "paste_faces", "paste_layer", "upscale_background",
]


@dataclass(frozen=True, eq=False)
class FacePaste:
    """One restored face to paste: image (S, S, 3) float32 RGB in [0, 1]; matrix (2, 3) frame -> crop (the
    alignment matrix); parse_mask (S, S) float32 in [0, 1] or None."""

    image: np.ndarray
    matrix: np.ndarray
    parse_mask: np.ndarray | None = None


def _shift_dst(inv: np.ndarray, x0: int, y0: int) -> np.ndarray:
    out = inv.copy()
    out[:, 2] -= (x0, y0)
    return out


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    # cv2 uses a 3x3 square for an empty kernel; the official code hits that when w_edge is 0 (tiny faces).
    return cv2.erode(mask, np.ones((k, k), np.uint8) if k > 0 else np.ones((3, 3), np.uint8))


def blend_face(canvas: np.ndarray, face: FacePaste, origin: tuple[int, int], frame_size: tuple[int, int],
               upscale: int = 1, exact: bool = False, unit: float = 1.0, antialias: bool = True,
               alpha: np.ndarray | None = None) -> None:
    """Blend one face into `canvas` in place: float32 (h, w, 3) holding pixel values in [0, unit], a window at
    `origin` (x, y) of the output frame of size frame_size (H, W). alpha: optional (h, w) float32 window of the
    accumulated blend weight, updated in place (1 - prod(1 - mask))."""
    size = face.image.shape[0]
    if face.image.shape != (size, size, 3):
        raise InputError(f"paste: restored face must be (S, S, 3), got {face.image.shape}")
    inv, side, (gx0, gy0, gx1, gy1) = paste_geometry(face.matrix, size, upscale, frame_size, exact)
    if exact:  # cv2 quantises warp coordinates relative to the output origin: bit parity needs the full frame
        gx0, gy0, gx1, gy1 = 0, 0, frame_size[1], frame_size[0]
    ox, oy = origin
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(gx0, ox), max(gy0, oy), min(gx1, ox + cw), min(gy1, oy + ch)
    if x1 <= x0 or y1 <= y0:
        return
    # Work in the face box of the full frame (so erosion/blur see the frame border where the official code does),
    # then write back the part inside the canvas window.
    local = _shift_dst(inv, gx0, gy0)
    box = (gx1 - gx0, gy1 - gy0)
    image = face.image
    if exact and unit == 255.0:  # the official code warps the uint8 face (cv2's fixed-point uint8 path)
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    sigma = antialias_sigma(warp_scale(inv)) if antialias and not exact else 0.0
    if sigma > 0.05:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    restored = cv2.warpAffine(image, local, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    scale_to_unit = restored.dtype != np.uint8  # a uint8 warp is already in 0..255 units
    restored = restored.astype(np.float32, copy=False)
    square = cv2.warpAffine(np.ones((size, size), np.float32), local, box, flags=cv2.INTER_LINEAR)
    eroded = _erode(square, int(2 * upscale))
    if exact:
        w_edge = int(float(eroded.sum()) ** 0.5) // 20
    else:  # area of the whole square, also when the frame border cuts it: the edge width stays steady
        w_edge = int(side) // 20
    soft = cv2.GaussianBlur(_erode(eroded, 2 * w_edge), (2 * w_edge + 1, 2 * w_edge + 1), 0)
    if face.parse_mask is not None:
        parse = cv2.warpAffine(face.parse_mask.astype(np.float32), local, box, flags=cv2.INTER_AREA if exact else cv2.INTER_LINEAR)
        soft = np.minimum(soft, parse)
    sl_g = (slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0))
    sl_c = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
    m = soft[sl_g][..., None]
    pasted = eroded[sl_g][..., None] * restored[sl_g]
    if unit != 1.0 and scale_to_unit:
        pasted *= np.float32(unit)
    canvas[sl_c] = m * pasted + (1.0 - m) * canvas[sl_c]
    if alpha is not None:
        alpha[sl_c] = 1.0 - (1.0 - m[..., 0]) * (1.0 - alpha[sl_c])


def face_region(face: FacePaste, frame_size: tuple[int, int], upscale: int = 1, exact: bool = False) -> tuple[int, int, int, int]:
    """Output-frame box (x0, y0, x1, y1) that pasting `face` can change."""
    return paste_geometry(face.matrix, face.image.shape[0], upscale, frame_size, exact)[2]


def upscale_background(frame: np.ndarray, upscale: int) -> np.ndarray:
    """Official default background: bilinear resize (a copy when upscale is 1)."""
    if upscale == 1:
        return frame.copy()
    h, w = frame.shape[:2]
    return cv2.resize(frame, (w * upscale, h * upscale), interpolation=cv2.INTER_LINEAR)


def _union_box(faces: Sequence[FacePaste], size: tuple[int, int], upscale: int, exact: bool) -> tuple[int, int, int, int] | None:
    boxes = np.array([face_region(f, size, upscale, exact) for f in faces]).reshape(-1, 4)
    if not len(boxes):
        return None
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _check_upscale(upscale: int) -> int:
    if int(upscale) != upscale or upscale < 1:
        raise InputError(f"upscale must be a whole number >= 1, got {upscale}")
    return int(upscale)


def paste_faces(
    frame: np.ndarray,
    faces: Sequence[FacePaste],
    *,
    upscale: int = 1,
    exact: bool = False,
    antialias: bool = True,
) -> np.ndarray:
    """Output frame (upscale × the input size, same dtype) with `faces` blended in order.

    frame: (H, W, 3) uint8 or float [0, 1]; the background is the frame resized bilinearly (the official default).
    Pixels that no face mask touches are exactly the background (`paste_layer` gives the faces' weight).
    """
    upscale = _check_upscale(upscale)
    if not isinstance(frame, np.ndarray):  # a tensor frame on the engine's device (CUDA)
        if exact:  # the official arithmetic: one round trip to the host
            return _paste_on_host(frame, faces, upscale=upscale, exact=exact, antialias=antialias)
        from ..kernels.paste_frame import paste_faces_tensor  # paste it there

        return paste_faces_tensor(frame, faces, upscale=upscale, antialias=antialias)
    out = upscale_background(frame, upscale)
    h, w = out.shape[:2]
    box = _union_box(faces, (h, w), upscale, exact)
    if box is not None:
        x0, y0, x1, y1 = box
        is_int = out.dtype == np.uint8
        canvas = out[y0:y1, x0:x1].astype(np.float32)  # 0..255 for uint8 frames, like the official arithmetic
        for face in faces:
            blend_face(canvas, face, (x0, y0), (h, w), upscale, exact, unit=255.0 if is_int else 1.0, antialias=antialias)
        if is_int:
            if exact:  # the official `.astype(uint8)` truncates
                out[y0:y1, x0:x1] = np.clip(canvas, 0, 255).astype(np.uint8)
            else:
                out[y0:y1, x0:x1] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        else:
            out[y0:y1, x0:x1] = canvas
    return out


@dataclass(frozen=True, eq=False)
class FaceLayer:
    """The faces of one output frame as a layer to composite in any pixel format:
    paste_faces(frame) = alpha·color + (1 − alpha)·background(frame) (up to fp32 rounding; uint8 frames round).

    color: (H·u, W·u, 3) float32 RGB in [0, 1], 0 where alpha is 0. alpha: (H·u, W·u) float32 in [0, 1]; exactly
    0 outside `box` (x0, y0, x1, y1) and wherever no face mask reaches (None when there are no faces)."""

    color: np.ndarray
    alpha: np.ndarray
    box: tuple[int, int, int, int] | None


def paste_layer(
    faces: Sequence[FacePaste],
    size: tuple[int, int],
    *,
    upscale: int = 1,
    exact: bool = False,
    antialias: bool = True,
) -> FaceLayer:
    """The faces `paste_faces` would blend into a (H, W) = `size` input frame, as colour + alpha instead of a
    finished frame, so the caller can merge them into the untouched source in its own format and precision.

    Same masks and order as `paste_faces` (the faces are blended onto a zero canvas, which gives the
    premultiplied colour; dividing by the accumulated alpha un-premultiplies it)."""
    upscale = _check_upscale(upscale)
    h, w = int(size[0]) * upscale, int(size[1]) * upscale
    color = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    box = _union_box(faces, (h, w), upscale, exact)
    if box is not None:
        x0, y0, x1, y1 = box
        canvas = color[y0:y1, x0:x1]
        window = alpha[y0:y1, x0:x1]
        for face in faces:
            blend_face(canvas, face, (x0, y0), (h, w), upscale, exact, antialias=antialias, alpha=window)
        a = window[..., None]
        np.divide(canvas, a, out=canvas, where=a > 0)
        canvas[np.broadcast_to(a <= 0, canvas.shape)] = 0.0
        np.clip(canvas, 0.0, 1.0, out=canvas)
        np.clip(window, 0.0, 1.0, out=window)  # 1 - prod(1 - m) can round to 1 + 1e-7
    return FaceLayer(color=color, alpha=alpha, box=box)


def _paste_on_host(frame: Any, faces: Sequence[FacePaste], **options: Any) -> Any:
    """`paste_faces` of a tensor frame through the cv2 path; the result goes back to the frame's device."""
    import torch

    from .device import to_host

    host = [FacePaste(to_host(f.image), np.asarray(f.matrix), None if f.parse_mask is None else to_host(f.parse_mask))
            for f in faces]
    return torch.from_numpy(paste_faces(frame.cpu().numpy(), host, **options)).to(frame.device)
