"""The one place that chooses between the torch reference kernels and their CuPy twins.

Policy: the torch kernels, unless the environment variable VS_KEEP_KERNELS is "cupy". The CuPy twins are opt-in
because their speed on a real GPU has never been measured (`vs-keep bench --devices cuda` measures both). With
"cupy", CUDA tensors of a supported dtype use CuPy once the kernel passed its self-check on that device
(`selfcheck.check_kernel`, run once per kernel and device on first use); a missing CuPy, an unsupported dtype or
a kernel that fails to compile or disagrees with its torch twin is an error. CPU tensors always use torch.

`frame_device` makes the other choice of the GPU path: where the face pipeline keeps frames. On CUDA, frames go to
the GPU once; detection (MTCNN), alignment crops, the model and the paste-back run there and the finished frame
comes back once. On CPU, frames stay numpy arrays and take the OpenCV path unchanged. VS_KEEP_FRAMES="host"
forces the OpenCV path on CUDA too; "device" keeps frames as torch tensors even on CPU (the GPU path's code with
the torch twins, which is how CI runs it without a GPU).
"""

from __future__ import annotations

import functools
import logging
import os
import threading

import torch

from ..errors import InputError
from .sources import kernel_source

__all__ = [
    "ENV_VAR", "FRAMES_ENV_VAR", "cupy_available", "frame_device", "kernel_mode", "kernel_ok", "reset_self_checks",
    "self_check_failures", "use_cupy",
]

log = logging.getLogger(__name__)

ENV_VAR = "VS_KEEP_KERNELS"
FRAMES_ENV_VAR = "VS_KEEP_FRAMES"
_MODES = ("torch", "cupy")
_LOCK = threading.Lock()
#: (kernel name, device) -> None (passed) or the reason it failed
_CHECKS: dict[tuple[str, str], str | None] = {}


def kernel_mode() -> str:
    mode = os.environ.get(ENV_VAR, "torch").strip().lower() or "torch"
    if mode not in _MODES:
        raise InputError(f"{ENV_VAR} must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


@functools.cache
def cupy_available() -> bool:
    """Whether CuPy imports and sees a CUDA device (checked once per process; logged once when missing)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception as exc:  # ImportError, or a CuPy/CUDA mismatch: either way we use torch
        if torch.cuda.is_available():
            log.info("CuPy kernels unavailable (%s); using the torch kernels", exc.__class__.__name__)
        return False


def kernel_ok(name: str, device: torch.device | str, launch: object = None) -> bool:
    """Whether kernel `name` passed its self-check on `device` (run now if it has not been; `launch` replaces the
    CuPy launcher, which is how the tests drive the same check with the CPU host harness)."""
    key = (name, str(torch.device(device)))
    with _LOCK:
        if key not in _CHECKS:
            from .cupy_impl import cupy_launch
            from .selfcheck import check_kernel

            reason = check_kernel(name, launch or cupy_launch, torch.device(device))  # type: ignore[arg-type]
            if reason is not None:
                log.warning("CuPy kernel %s failed its self-check on %s (%s)", name, key[1], reason)
            _CHECKS[key] = reason
        return _CHECKS[key] is None


def self_check_failures() -> dict[tuple[str, str], str]:
    """Kernels that failed their self-check so far: (name, device) -> reason."""
    with _LOCK:
        return {k: v for k, v in _CHECKS.items() if v is not None}


def reset_self_checks() -> None:
    """Forget all verdicts (tests; a new run in the same process checks again)."""
    with _LOCK:
        _CHECKS.clear()


def use_cupy(kernel: str, tensor: torch.Tensor, *dtypes: torch.dtype) -> bool:
    """Whether `kernel` should run as its CuPy twin for `tensor`; `dtypes`: the template instantiation it needs
    (`sources.kernel_source(kernel).dtypes`), by default the tensor's own dtype."""
    mode = kernel_mode()  # validated even for CPU tensors, so a typo shows up on any machine
    if tensor.device.type != "cuda" or mode == "torch":
        return False
    dtypes = dtypes or (tensor.dtype,)
    if not cupy_available() or dtypes not in kernel_source(kernel).dtypes:
        raise InputError(
            f"{ENV_VAR}=cupy but the CuPy kernels cannot run here ({'dtype ' + ', '.join(map(str, dtypes)) if cupy_available() else 'cupy is not installed or sees no GPU'}); "
            "install cupy-cuda13x (or cupy-cuda12x, matching torch.version.cuda) or unset the variable"
        )
    if not kernel_ok(kernel, tensor.device):
        reason = _CHECKS.get((kernel, str(tensor.device)))
        raise InputError(f"{ENV_VAR}=cupy but the CuPy kernel {kernel} failed its self-check ({reason}); unset the variable")
    return True


def frame_device(device: torch.device | str | None) -> torch.device | None:
    """The device the face pipeline keeps frames on for an engine running on `device`, or None for numpy frames
    (the OpenCV path). "auto": the CUDA device when the engine runs on CUDA."""
    mode = os.environ.get(FRAMES_ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in ("auto", "host", "device"):
        raise InputError(f"{FRAMES_ENV_VAR} must be one of auto, host, device, got {mode!r}")
    dev = torch.device(device if device is not None else "cpu")
    if mode == "host" or (mode == "auto" and dev.type != "cuda"):
        return None
    return dev
