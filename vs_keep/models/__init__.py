"""Networks (clean-room PyTorch) and the checkpoint loader.

`load(path, device="cpu", dtype=torch.float32)` recognises KEEP, CodeFormer and DIC checkpoints by their keys;
`model_info(module)` says what the loaded network is (kind, recurrent, takes fidelity, scale).
"""

from __future__ import annotations

from .info import ModelInfo, model_info
from .registry import ARCHITECTURES, load

__all__ = ["ARCHITECTURES", "ModelInfo", "load", "model_info"]
