"""Low-level kernels behind one signature each: a torch reference and a CuPy twin, picked in `select.use_cupy`.

- `flow_warp(x, flow)`: KEEP's backward warp (bilinear, zeros, align_corners=True).
- `affine_crop(frame, matrices, size, ...)`: aligned face crops straight from a full uint8/float frame.
- `paste_face(canvas, face, matrix, ...)`: inverse-affine paste-back fused with the official soft-mask blend.
CuPy (opt-in, VS_KEEP_KERNELS=cupy) is imported only inside the first CUDA call; CPU tensors always take the torch path. `cuda_sources()` is the
exact CUDA text and every template instantiation (what CI compiles with NVRTC and runs through a host harness).
Each function here checks and prepares its arguments once; both twins (`selfcheck.TWINS`) then take the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .crop import as_chw_view, sampling_matrices
from .paste_blend import PastePlan, paste_masks, plan_paste
from .select import use_cupy
from .selfcheck import TWINS
from .sources import cuda_sources
from .warp import check_warp_args

__all__ = ["PastePlan", "affine_crop", "cuda_sources", "flow_warp", "paste_face", "plan_paste"]


def _twin(kernel: str, tensor: Tensor, *dtypes: torch.dtype) -> Callable[..., Any]:
    """The implementation of `kernel` for `tensor`: its CuPy twin where `select.use_cupy` says so, else torch."""
    torch_impl, cupy_impl = TWINS[kernel]
    return cupy_impl if use_cupy(kernel, tensor, *dtypes) else torch_impl


def flow_warp(x: Tensor, flow: Tensor) -> Tensor:
    """Sample x (N, C, H, W) at grid + flow (N, 2, H, W, channel 0 = dx); zero outside; result has x's dtype."""
    check_warp_args(x, flow)
    return _twin("flow_warp", x)(x, flow)


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
    (frame units, one value or one per channel, e.g. the official (132, 133, 135) RGB for uint8 frames) outside,
    cv2.warpAffine geometry. scale=2/255, offset=-1 gives KEEP's input. See `crop.affine_crop_torch`.
    """
    src = as_chw_view(frame, layout)
    if int(size) < 1:
        raise InputError(f"crop size must be >= 1, got {size}")
    fill = torch.as_tensor(border, dtype=torch.float32, device=src.device).reshape(-1)
    if fill.numel() not in (1, src.shape[0]):
        raise InputError(f"border must be one value or {src.shape[0]} values (one per channel), got {fill.numel()}")
    coef = torch.from_numpy(sampling_matrices(matrices, invert=True)).to(src.device)  # (N, 6)
    crop = _twin("affine_crop", src, src.dtype, out_dtype)
    return crop(src, coef, fill.expand(src.shape[0]).contiguous(), int(size), float(scale), float(offset), out_dtype)


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
    from ..geometry import antialias_sigma, warp_scale
    from .blur import gaussian_blur

    view = as_chw_view(canvas, layout)
    if face.ndim != 3 or face.shape[1] != face.shape[2] or face.shape[0] != view.shape[0]:
        raise InputError(f"paste_face: face must be ({view.shape[0]}, S, S), got {tuple(face.shape)}")
    size = int(face.shape[-1])
    plan = plan_paste(matrix, size, (view.shape[1], view.shape[2]), upscale)
    x0, y0, x1, y1 = plan.box
    if x1 <= x0 or y1 <= y0:
        return plan
    img = face.to(device=canvas.device, dtype=torch.float32)
    if antialias:
        sigma = antialias_sigma(warp_scale(plan.inv))
        if sigma > 0.05:
            img = gaussian_blur(img, sigma=sigma, border="reflect")
    coef = torch.from_numpy(plan.coef).to(canvas.device)
    eroded, soft = paste_masks(plan, size, coef, parse_mask)
    _twin("paste_blend", view)(view, img.contiguous(), coef, plan.box, eroded, soft, float(unit))
    return plan
