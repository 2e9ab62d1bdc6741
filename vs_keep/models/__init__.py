"""Networks (clean-room PyTorch) and the checkpoint loader.

`load(path, device="cpu", dtype=torch.float32)` recognises KEEP, CodeFormer and DIC checkpoints by their keys;
`model_info(module)` says what the loaded network is (kind, recurrent, takes fidelity, scale).
"""

from __future__ import annotations

from .info import ModelInfo, model_info
from .registry import MODELS, load

__all__ = ["MODELS", "ModelInfo", "load", "model_info"]
