"""The one place that chooses between the torch reference kernels and their CuPy twins.

Policy: CuPy for CUDA tensors of a supported dtype when `cupy` imports, torch otherwise. The environment variable
VS_KEEP_KERNELS overrides it: "torch" (always the reference), "cupy" (require CuPy for CUDA tensors; an error
if it is missing) or "auto" (default). CPU tensors always use torch.
"""

from __future__ import annotations

import logging
import os

import torch

from ..errors import InputError

__all__ = ["ENV_VAR", "cupy_available", "kernel_mode", "use_cupy"]

log = logging.getLogger(__name__)

ENV_VAR = "VS_KEEP_KERNELS"
_MODES = ("auto", "torch", "cupy")
_STATE: dict[str, bool] = {}


def kernel_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise InputError(f"{ENV_VAR} must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def cupy_available() -> bool:
    """Whether CuPy imports and sees a CUDA device (checked once per process; logged once when missing)."""
    if "ok" not in _STATE:
        try:
            import cupy

            _STATE["ok"] = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception as exc:  # ImportError, or a CuPy/CUDA mismatch: either way we use torch
            _STATE["ok"] = False
            if torch.cuda.is_available():
                log.info("CuPy kernels unavailable (%s); using the torch kernels", exc.__class__.__name__)
    return _STATE["ok"]


def use_cupy(tensor: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16)) -> bool:
    """Whether the kernel for `tensor` should be the CuPy one."""
    mode = kernel_mode()  # validated even for CPU tensors, so a typo shows up on any machine
    if tensor.device.type != "cuda" or mode == "torch":
        return False
    ok = tensor.dtype in dtypes and cupy_available()
    if mode == "cupy" and not ok:
        raise InputError(
            f"{ENV_VAR}=cupy but the CuPy kernels cannot run here ({'dtype ' + str(tensor.dtype) if cupy_available() else 'cupy is not installed or sees no GPU'}); "
            "install cupy-cuda12x or unset the variable"
        )
    return ok
