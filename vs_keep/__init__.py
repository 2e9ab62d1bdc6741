"""vs-keep: KEEP video face restoration.

The engine (models, Kalman sequencing, face pipeline, kernels, CLI) lives in this package and never imports
VapourSynth or CuPy at import time. The VapourSynth filter `keep()` lives in `vs_keep.plugin` and is re-exported
lazily, so `import vs_keep` works on machines without VapourSynth.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "keep"]


def __getattr__(name: str) -> Any:
    # Lazy re-exports: nothing heavy (torch, vapoursynth) happens at `import vs_keep`.
    if name == "load":
        from .models import load

        return load
    if name == "keep":
        from .plugin import keep

        return keep
    raise AttributeError(f"module 'vs_keep' has no attribute {name!r}")
