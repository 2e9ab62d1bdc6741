"""Self-check of a compiled kernel against its torch twin, run once per kernel and device before first use.

Why: the CuPy kernels are compiled by NVRTC on the user's machine (their driver, their GPU generation). A compile
error or a kernel that computes something else there must not crash a long restore or, worse, paste wrong pixels.
`check_kernel` runs every template instantiation of a kernel on a small deterministic input through a `Launch`
(CuPy on the GPU; the g++ host harness in the tests) and compares with the torch twin on the same device: bit for
bit for the crop and paste kernels (the twins promise it), a stated tolerance for the flow warp. `select` records
the verdict (one warning per kernel and device); a kernel that failed it is then an InputError naming the reason,
never a silent switch to the torch twin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .crop import affine_crop_torch, as_chw_view, sampling_matrices
from .cupy_impl import Launch, affine_crop_cupy, flow_warp_cupy, paste_blend_cupy
from .paste_blend import paste_blend_torch, paste_masks, plan_paste
from .warp import flow_warp_torch

__all__ = ["TWINS", "check_kernel"]

#: kernel name -> (torch reference, CuPy twin): both take the same arguments (the twin also `launch=`)
TWINS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "flow_warp": (flow_warp_torch, flow_warp_cupy),
    "affine_crop": (affine_crop_torch, affine_crop_cupy),
    "paste_blend": (paste_blend_torch, paste_blend_cupy),
}

#: flow warp: the kernel repeats grid_sample's arithmetic but either side may contract a multiply-add into an FMA
#: (nvcc's default); that moves results by a few float32 ulps of values in [-1, 1] (1e-5 bounds 80 ulps), and can
#: flip a float16 rounding by one half ulp (2^-11 at |v| <= 1; 1e-3 allows that). Crop and paste: bit for bit.
WARP_ATOL = {torch.float32: 1e-5, torch.float16: 1e-3}

_MATRIX = np.array([[1.21, 0.35, -7.0], [-0.35, 1.21, 4.5]])  # rotation + scale, reaching outside the frame

#: one case: (label, the arguments of both twins, tolerance)
Case = tuple[str, tuple[Any, ...], float]


def _frame(dtype: torch.dtype, device: torch.device, h: int = 23, w: int = 29) -> Tensor:
    g = torch.Generator().manual_seed(17)
    x = torch.rand(h, w, 3, generator=g)
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8).to(device)
    return x.to(device=device, dtype=dtype)


def _cases_flow_warp(device: torch.device) -> Iterator[Case]:
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 3, 9, 11, generator=g) * 2 - 1).to(device)
    flow = ((torch.rand(2, 2, 9, 11, generator=g) - 0.5) * 6).to(device)
    for dt in (torch.float32, torch.float16):
        yield f"flow_warp<{dt}>", (x.to(dt), flow), WARP_ATOL[dt]


def _cases_affine_crop(device: torch.device) -> Iterator[Case]:
    coef = torch.from_numpy(sampling_matrices(_MATRIX, invert=True)).to(device)
    for dt in (torch.float32, torch.float16, torch.uint8):
        src = as_chw_view(_frame(dt, device), "hwc")
        border = (132.0, 133.0, 135.0) if dt == torch.uint8 else (0.25, 0.5, 0.75)
        scale = 2 / 255 if dt == torch.uint8 else 2.0
        fill = torch.tensor(border, dtype=torch.float32, device=device)
        for out in (torch.float32, torch.float16):
            yield f"affine_crop<{dt}, {out}>", (src, coef, fill, 16, scale, -1.0, out), 0.0


def _cases_paste_blend(device: torch.device) -> Iterator[Case]:
    g = torch.Generator().manual_seed(9)
    face = torch.rand(3, 16, 16, generator=g).to(device)
    plan = plan_paste(np.array([[0.8, 0.1, 2.0], [-0.1, 0.8, 1.0]]), 16, (23, 29))  # the face covers most of the frame
    coef = torch.from_numpy(plan.coef).to(device)
    eroded, soft = paste_masks(plan, 16, coef)
    for dt in (torch.float32, torch.float16, torch.uint8):
        unit = 255.0 if dt == torch.uint8 else 1.0
        yield f"paste_blend<{dt}>", (as_chw_view(_frame(dt, device), "hwc"), face, coef, plan.box, eroded, soft, unit), 0.0


_CASES: dict[str, Callable[[torch.device], Iterator[Case]]] = {
    "flow_warp": _cases_flow_warp,
    "affine_crop": _cases_affine_crop,
    "paste_blend": _cases_paste_blend,
}


def check_kernel(name: str, launch: Launch, device: torch.device | str) -> str | None:
    """None when every instantiation of kernel `name` run through `launch` matches its torch twin on `device`;
    otherwise the reason (compile error, launch error or the first mismatch). Never raises for kernel faults."""
    device = torch.device(device)
    torch_impl, cupy_impl = TWINS[name]
    try:
        # the first use may come from inside the model's autocast region: the check compares plain fp32 twins
        with torch.autocast(device_type=device.type, enabled=False), torch.inference_mode():
            for what, args, atol in _CASES[name](device):
                def fresh() -> list[Any]:  # paste_blend writes into its canvas: each twin gets its own copy
                    return [a.clone() if isinstance(a, Tensor) else a for a in args]

                ref, got = torch_impl(*fresh()), cupy_impl(*fresh(), launch=launch)
                if got.shape != ref.shape or got.dtype != ref.dtype:
                    return f"{what}: result {tuple(got.shape)} {got.dtype}, twin {tuple(ref.shape)} {ref.dtype}"
                diff = (got.float() - ref.float()).abs()
                if atol == 0.0 and not torch.equal(got, ref):
                    return f"{what}: {int((diff > 0).sum())} values differ from the torch twin (max {float(diff.max()):.3g})"
                if atol > 0.0 and (not bool(torch.isfinite(got.float()).all()) or float(diff.max()) > atol):
                    return f"{what}: max difference {float(diff.max()):.3g} from the torch twin exceeds {atol:g}"
    except Exception as exc:  # noqa: BLE001 - any compile/launch failure means: use the twin
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:2]  # the headline and the first error
        return f"{exc.__class__.__name__}: {' '.join(lines)}"
    return None
