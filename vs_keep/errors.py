"""Error types. Every message names what was wrong and how to fix it; no raw tracebacks from deep inside torch."""

from __future__ import annotations

__all__ = ["CheckpointError", "InputError", "VsKeepError", "WeightsNotFoundError"]


class VsKeepError(Exception):
    """Base class of vs-keep's own errors."""


class CheckpointError(VsKeepError, ValueError):
    """A weights file could not be read or does not match any supported model."""


class WeightsNotFoundError(VsKeepError, FileNotFoundError):
    """A weights file is missing and could not be downloaded."""


class InputError(VsKeepError, ValueError):
    """A parameter or input has the wrong type, shape, range or value."""
