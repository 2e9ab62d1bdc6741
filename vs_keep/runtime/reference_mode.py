"""A per-thread switch that sends the rewritten CPU modules (`vs_keep.runtime.cpu`) back to their original forward.

Why its own module: the graph exporters (`onnx_export`) need the switch while tracing, and `cpu` needs the
exporters for its onnxruntime flow; with the switch here neither imports the other back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["reference_ops", "reference_only"]

_REFERENCE_ONLY = threading.local()


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Inside this context the rewritten modules run their original forward (used while exporting graphs)."""
    before = reference_only()
    _REFERENCE_ONLY.on = True
    try:
        yield
    finally:
        _REFERENCE_ONLY.on = before


def reference_only() -> bool:
    """Whether this thread is inside `reference_ops()`."""
    return getattr(_REFERENCE_ONLY, "on", False)
