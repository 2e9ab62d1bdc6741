"""KEEP's flow warp (torch reference): bilinear fetch at (x+dx, y+dy), zero outside, align_corners=True.

Why these exact settings: KEEP warps its previous raw output (in [-1, 1], so a zero tap is mid-grey) with the
backward GMFlow flow, and any other convention (align_corners=False, border padding) changes the filter state.
The CuPy twin (`cupy_impl.flow_warp_cupy`) repeats grid_sample's coordinate arithmetic; `vs_keep.kernels`
chooses between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..numerics import at_least_float32

__all__ = ["check_warp_args", "flow_warp_torch"]


def check_warp_args(x: Tensor, flow: Tensor) -> None:
    if x.ndim != 4 or flow.ndim != 4:
        raise InputError(f"flow_warp: x must be (N, C, H, W) and flow (N, 2, H, W), got {tuple(x.shape)} and {tuple(flow.shape)}")
    n, _, h, w = x.shape
    if tuple(flow.shape) != (n, 2, h, w):
        raise InputError(
            f"flow_warp: flow must be (N, 2, H, W) = {(n, 2, h, w)} to match x {tuple(x.shape)}, got {tuple(flow.shape)} "
            "(channel-first; permute a (N, H, W, 2) flow first)"
        )
    if x.device != flow.device:
        raise InputError(f"flow_warp: x is on {x.device} but flow on {flow.device}; move both to one device")


def flow_warp_torch(x: Tensor, flow: Tensor) -> Tensor:
    """Sample `x` (N, C, H, W) at pixel positions grid + `flow` (N, 2, H, W; channel 0 = dx, 1 = dy).

    Output pixel (x, y) is the bilinear mix of x around (x+dx, y+dy); each of the 4 taps outside
    [0, W-1] x [0, H-1] contributes 0. Coordinates are built and sampled in at least float32 (`vs_keep.numerics`:
    16-bit normalised coordinates would lose a quarter pixel at 512 px; float64 stays float64 for exact runs);
    the result has x's dtype. `vs_keep.kernels.flow_warp` checks the arguments.
    """
    _, _, h, w = x.shape
    work = at_least_float32(x.dtype)
    src = x.to(work)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=work),
        torch.arange(w, device=x.device, dtype=work),
        indexing="ij",
    )
    flow = flow.to(work)
    sx = xs + flow[:, 0]
    sy = ys + flow[:, 1]
    gx = 2.0 * sx / max(w - 1, 1) - 1.0
    gy = 2.0 * sy / max(h - 1, 1) - 1.0
    out = F.grid_sample(src, torch.stack((gx, gy), dim=3), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(x.dtype)
