"""A per-thread switch that sends the CPU-rewritten modules of `runtime.cpu` back to their original forward.

Why a module of its own: graph export (`runtime.onnx_export`) must trace the reference ops, and `runtime.cpu`
uses the exporter for its onnxruntime flow; with the switch here neither imports the other back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["reference_ops", "reference_only"]

_STATE = threading.local()


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Inside this context the rewritten modules run their original forward (used while exporting graphs)."""
    before = getattr(_STATE, "on", False)
    _STATE.on = True
    try:
        yield
    finally:
        _STATE.on = before


def reference_only() -> bool:
    """Whether the current thread is inside `reference_ops()`."""
    return bool(getattr(_STATE, "on", False))
