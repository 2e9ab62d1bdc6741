"""Alignment of a face to the FFHQ five-point template, and the inverse mapping used by paste-back.

Pure functions of (image, landmarks / matrix) so a GPU twin and the VapourSynth plugin can reuse them.

- `estimate_similarity` fits rotation + uniform scale + translation. The default closed-form least squares is a
  smooth function of the landmarks (no random sampling, no inlier switching between frames), and on five face
  landmarks it agrees with the official `cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`, which LMEDS then
  refines over all inliers; `method="lmeds"` calls that official estimator.
- `align_face` resamples the crop. When the face is larger than the crop (downscaling), plain bilinear sampling
  aliases and a moving face flickers (VideoGigaGAN's lesson); the default low-pass filters the source region first
  with a Gaussian matched to the scale. `exact=True` is the official `cv2.warpAffine(INTER_LINEAR)` on the frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..geometry import antialias_sigma, invert_affine, square_box, warp_scale

__all__ = [
    "BORDER_RGB", "FFHQ_TEMPLATE_512", "align_face", "alignment_matrix", "estimate_similarity",
    "face_template", "to_unit_float",
]

#: FFHQ 512x512 template (facexlib / CodeFormer / KEEP), RetinaFace landmark order.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

#: Official border fill: the official code passes (135, 133, 132) to warpAffine on a BGR frame, i.e. this RGB.
BORDER_RGB = (132.0, 133.0, 135.0)
_UNIT_FILL = tuple(v / 255.0 for v in BORDER_RGB)  # the same for frames in [0, 1]


def face_template(face_size: int) -> np.ndarray:
    """(5, 2) template for a face_size x face_size crop (the 512 template scaled by face_size / 512)."""
    if int(face_size) <= 0:
        raise InputError(f"face_template: face_size must be a positive number of pixels, got {face_size}")
    return FFHQ_TEMPLATE_512 * (int(face_size) / 512.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray, method: str = "lstsq") -> np.ndarray:
    """(2, 3) similarity transform mapping points `src` (N,2) onto `dst` (N,2).

    method: "lstsq" (closed form, deterministic, smooth in the inputs) or "lmeds" (cv2 LMEDS, the official
    estimator; falls back to lstsq when cv2 finds no model).
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise InputError(f"estimate_similarity: need matching point sets of >= 2 points, got {len(src)} and {len(dst)}")
    if method == "lmeds":
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if m is not None:
            return m.astype(np.float64)
    elif method != "lstsq":
        raise InputError(f"estimate_similarity: method must be 'lstsq' or 'lmeds', got {method!r}")
    sc, dc = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - sc, dst - dc
    norm = float((s * s).sum())
    if norm <= 1e-12:
        raise InputError("estimate_similarity: the source landmarks all coincide; no transform is defined")
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (dc - rot @ sc)[:, None]], axis=1)


def alignment_matrix(landmarks: np.ndarray, face_size: int, method: str = "lstsq") -> np.ndarray:
    """(2, 3) matrix mapping frame coordinates to crop coordinates for landmarks (5, 2)."""
    return estimate_similarity(landmarks, face_template(face_size), method)


def _shift_source(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Matrix for a source cropped at (x0, y0): dst = A (p + o) + t."""
    out = np.array(m, np.float64)
    out[:, 2] = out[:, 2] + out[:, :2] @ np.array([x0, y0], np.float64)
    return out


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return image.astype(np.float32, copy=False)


def align_face(
    image: np.ndarray | torch.Tensor,
    matrix: np.ndarray,
    face_size: int,
    *,
    antialias: bool = True,
    exact: bool = False,
) -> np.ndarray | torch.Tensor:
    """Aligned (face_size, face_size, 3) float32 crop in [0, 1] from an (H, W, 3) uint8 or [0, 1] float frame.

    matrix: (2, 3) frame -> crop coordinates (see `alignment_matrix`). exact: the official path (uint8 frames
    are warped as uint8, so the crop is quantised like the official one). Otherwise only the source region is
    converted to float and, when shrinking, blurred before the bilinear warp.
    A torch tensor frame (the engine's frames on CUDA, see `kernels.select.frame_device`) gives a tensor crop on
    its device, cut by `kernels.affine_crop` (the CuPy kernel on CUDA) after the same Gaussian prefilter.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"align_face: image must be HxWx3, got shape {tuple(image.shape)}")
    if isinstance(image, torch.Tensor):
        return _align_face_tensor(image, matrix, face_size, antialias=antialias, exact=exact)
    size = int(face_size)
    m = np.asarray(matrix, np.float64)
    fill = BORDER_RGB if image.dtype == np.uint8 else _UNIT_FILL
    if exact:
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        return to_unit_float(crop)
    sigma = antialias_sigma(warp_scale(m)) if antialias else 0.0
    pad = int(math.ceil(3 * sigma)) + 2
    h, w = image.shape[:2]
    x0, y0, x1, y1 = square_box(invert_affine(m), size, pad, h, w)
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the frame
        return np.broadcast_to(np.array(_UNIT_FILL, np.float32), (size, size, 3)).copy()
    roi = to_unit_float(image[y0:y1, x0:x1])
    if sigma > 0.05:
        roi = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return cv2.warpAffine(
        roi, _shift_source(m, x0, y0), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=_UNIT_FILL,
    )


def _align_face_tensor(image: torch.Tensor, matrix: np.ndarray, face_size: int, *, antialias: bool, exact: bool) -> torch.Tensor:
    """`align_face` for a tensor frame, on its device. Same region, prefilter sigma, border and geometry as the
    cv2 path; differs from it by cv2's 1/32-pixel rounding of sample positions (and float32 rounding)."""
    from ..kernels import affine_crop
    from ..kernels.blur import gaussian_blur

    size = int(face_size)
    m = np.asarray(matrix, np.float64)
    if exact:  # the official uint8 cv2 warp: one copy of the frame to the host, for comparisons only
        return torch.from_numpy(align_face(image.cpu().numpy(), m, size, exact=True)).to(image.device)
    unit = 1 / 255 if image.dtype == torch.uint8 else 1.0
    sigma = antialias_sigma(warp_scale(m)) if antialias else 0.0
    if sigma <= 0.05:  # no prefilter: sample the frame itself, scaled to [0, 1] in the same pass
        fill = BORDER_RGB if image.dtype == torch.uint8 else _UNIT_FILL
        return affine_crop(image, m, size, layout="hwc", border=fill, scale=unit)[0].permute(1, 2, 0)
    pad = int(math.ceil(3 * sigma)) + 2
    h, w = image.shape[:2]
    x0, y0, x1, y1 = square_box(invert_affine(m), size, pad, h, w)
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the frame
        return torch.tensor(_UNIT_FILL, dtype=torch.float32, device=image.device).expand(size, size, 3).clone()
    roi = image[y0:y1, x0:x1].permute(2, 0, 1).to(torch.float32)
    if unit != 1.0:
        roi = roi * torch.tensor(unit, dtype=torch.float32)
    roi = gaussian_blur(roi, sigma=sigma, border="reflect")
    return affine_crop(roi, _shift_source(m, x0, y0), size, layout="chw", border=_UNIT_FILL)[0].permute(1, 2, 0)
