"""VapourSynth plugin layer: `keep(clip, ...)`. Imported as `vs_keep.plugin` (this folder is mapped by setup.py)."""

from __future__ import annotations

from typing import Any


def keep(clip: Any, *args: Any, **kwargs: Any) -> Any:
    """Placeholder until the recurrent filter lands."""
    raise NotImplementedError("keep: the VapourSynth filter is not implemented yet")
