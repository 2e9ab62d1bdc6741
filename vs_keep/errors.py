"""Error types. Every message names what was wrong and how to fix it; no raw tracebacks from deep inside torch."""

from __future__ import annotations

import sys

__all__ = [
    "OOM_ADVICE", "OOM_ADVICE_CLI", "CheckpointError", "InputError", "OutputError", "VsKeepError",
    "WeightsNotFoundError", "is_out_of_memory", "user_message",
]


class VsKeepError(Exception):
    """Base class of vs-keep's own errors."""


class CheckpointError(VsKeepError, ValueError):
    """A weights file could not be read or does not match any supported model."""


class WeightsNotFoundError(VsKeepError, FileNotFoundError):
    """A weights file is missing and could not be downloaded."""


class InputError(VsKeepError, ValueError):
    """A parameter or input has the wrong type, shape, range or value."""


class OutputError(VsKeepError, OSError):
    """An output path cannot be written (it is the input, or the folder is not writable)."""


#: what to lower when the GPU runs out of memory: as `keep()` parameters, and as `vs-keep restore` flags
OOM_ADVICE = "lower faces ('largest'), upscale or chunk, set fp16=True, or use another device (device='cuda:1' or 'cpu')"
OOM_ADVICE_CLI = "lower --faces (largest), --upscale or --chunk, add --fp16, or use another device (--device cuda:1 or cpu)"


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU out-of-memory, however torch reports it (its own type, or a RuntimeError from cuDNN/cuBLAS)."""
    torch = sys.modules.get("torch")  # not imported here: `vs-keep download` must not pay for torch
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and "out of memory" in text and any(k in text for k in ("cuda", "cudnn", "cublas", "hip"))


def user_message(exc: BaseException) -> str:
    """One line for a user: what went wrong and, where we know it, how to fix it.

    vs-keep's own errors already say both and are returned as they are; GPU out-of-memory names the settings to
    lower; anything else becomes `TypeName: first line of its message` (the traceback belongs in the DEBUG log).
    """
    if isinstance(exc, VsKeepError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"GPU out of memory: {OOM_ADVICE}"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    name = type(exc).__name__
    return f"{name}: {first}" if first else name
