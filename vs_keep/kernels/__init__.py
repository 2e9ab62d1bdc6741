"""Low-level kernels behind one signature each; this module picks the implementation (torch reference for now)."""

from __future__ import annotations

from .warp import flow_warp

__all__ = ["flow_warp"]
