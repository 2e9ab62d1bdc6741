"""Networks (clean-room PyTorch) and the checkpoint loader.

`load(path, device="cpu", dtype=torch.float32)` recognises KEEP, CodeFormer and DIC checkpoints by their keys.
"""

from __future__ import annotations

from .registry import ARCHITECTURES, load

__all__ = ["ARCHITECTURES", "load"]
