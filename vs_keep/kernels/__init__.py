"""Low-level kernels behind one signature each: a torch reference and a CuPy twin, picked in `select.use_cupy`.

- `flow_warp(x, flow)`: KEEP's backward warp (bilinear, zeros, align_corners=True).
- `affine_crop(frame, matrices, size, ...)`: aligned face crops straight from a full uint8/float frame.
- `paste_face(canvas, face, matrix, ...)`: inverse-affine paste-back fused with the official soft-mask blend.
CuPy (opt-in, VS_KEEP_KERNELS=cupy) is imported only inside the first CUDA call; CPU tensors always take the torch path. `cuda_sources()` is the
exact CUDA text and every template instantiation (what CI compiles with NVRTC and runs through a host harness).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .crop import affine_crop_torch, as_chw_view, sampling_matrices
from .paste_blend import PastePlan, paste_blend_torch, paste_masks, plan_paste
from .select import use_cupy
from .sources import cuda_sources
from .warp import check_warp_args, flow_warp_torch

__all__ = ["PastePlan", "affine_crop", "cuda_sources", "flow_warp", "paste_face", "paste_face_masks", "plan_paste"]


def flow_warp(x: Tensor, flow: Tensor) -> Tensor:
    """Sample x (N, C, H, W) at grid + flow (N, 2, H, W, channel 0 = dx); zero outside; result has x's dtype."""
    if use_cupy(x, kernel="flow_warp"):
        from .cupy_impl import flow_warp_cupy

        check_warp_args(x, flow)
        return flow_warp_cupy(x, flow)
    return flow_warp_torch(x, flow)


def affine_crop(
    frame: Tensor,
    matrices: np.ndarray | Tensor,
    size: int,
    *,
    layout: str = "hwc",
    border: float | Sequence[float] = 0.0,
    scale: float = 1.0,
    offset: float = 0.0,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(N, C, size, size) crops `value·scale + offset` of `frame` for N alignment matrices (frame -> crop).

    frame: (H, W, C) ("hwc") or (C, H, W) ("chw") uint8/float16/float32 tensor; bilinear with constant `border`
    (frame units) outside, cv2.warpAffine geometry. See `crop.affine_crop_torch` for the reference.
    """
    if use_cupy(frame, (torch.float32, torch.float16, torch.uint8), kernel="affine_crop") and out_dtype in (torch.float32, torch.float16):
        from .cupy_impl import affine_crop_cupy

        src = as_chw_view(frame, layout)
        coef = torch.from_numpy(sampling_matrices(matrices, invert=True)).to(frame.device)
        fill = torch.as_tensor(border, dtype=torch.float32).reshape(-1).expand(src.shape[0]).contiguous().to(frame.device)
        if int(size) < 1:
            raise InputError(f"crop size must be >= 1, got {size}")
        return affine_crop_cupy(src, coef, fill, int(size), float(scale), float(offset), out_dtype)
    return affine_crop_torch(
        frame, matrices, size, layout=layout, border=border, scale=scale, offset=offset, out_dtype=out_dtype
    )


def paste_face(
    canvas: Tensor,
    face: Tensor,
    matrix: np.ndarray,
    *,
    layout: str = "hwc",
    upscale: int = 1,
    unit: float = 1.0,
    parse_mask: Tensor | None = None,
    antialias: bool = True,
) -> PastePlan:
    """Blend a restored face (C, S, S) float in [0, 1] into `canvas` in place, like `vs_keep.face.paste` does.

    canvas: the output frame (upscale × the input frame), (H, W, C) or (C, H, W), uint8/float16/float32, on any
    device; matrix: the face's alignment matrix (2, 3) input frame -> crop; unit: canvas value of 1.0 (255 for
    uint8). antialias: low-pass the face first when it shrinks (the helper's default). Returns the geometry used.
    """
    return paste_face_masks(canvas, face, matrix, layout=layout, upscale=upscale, unit=unit, parse_mask=parse_mask,
                            antialias=antialias)[0]


def paste_face_masks(
    canvas: Tensor,
    face: Tensor,
    matrix: np.ndarray,
    *,
    layout: str = "hwc",
    upscale: int = 1,
    unit: float = 1.0,
    parse_mask: Tensor | None = None,
    antialias: bool = True,
) -> tuple[PastePlan, Tensor | None]:
    """`paste_face`, also returning the soft mask (h, w) over the plan's box (None when the box is empty)."""
    from ..geometry import antialias_sigma, warp_scale
    from .blur import gaussian_blur

    view = as_chw_view(canvas, layout)
    if face.ndim != 3 or face.shape[1] != face.shape[2] or face.shape[0] != view.shape[0]:
        raise InputError(f"paste_face: face must be ({view.shape[0]}, S, S), got {tuple(face.shape)}")
    size = int(face.shape[-1])
    plan = plan_paste(matrix, size, (view.shape[1], view.shape[2]), upscale)
    x0, y0, x1, y1 = plan.box
    if x1 <= x0 or y1 <= y0:
        return plan, None
    img = face.to(device=canvas.device, dtype=torch.float32)
    if antialias:
        sigma = antialias_sigma(warp_scale(plan.inv))
        if sigma > 0.05:
            img = gaussian_blur(img, sigma=sigma, border="reflect")
    eroded, soft = paste_masks(plan, size, canvas.device, parse_mask)
    if use_cupy(canvas, (torch.float32, torch.float16, torch.uint8), kernel="paste_blend"):
        from .cupy_impl import paste_blend_cupy

        coef = torch.from_numpy(plan.coef).to(canvas.device)
        paste_blend_cupy(view, img.contiguous(), coef, plan.box, eroded, soft, float(unit))
    else:
        paste_blend_torch(canvas, img, plan, eroded, soft, layout=layout, unit=unit)
    return plan, soft
