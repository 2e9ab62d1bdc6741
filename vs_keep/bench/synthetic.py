"""Synthetic KEEP models for benchmarks and tests: the fixtures' weights built in memory (no file round trip)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["build_synthetic_keep", "tiny_keep_config"]


def tiny_keep_config() -> Any:
    """A 32x32 KEEP with every code path (flow, gains, SFT at 16/32, CFA at 16/32): ~40 ms a frame on one core,
    for memory runs over thousands of frames."""
    from ..models.core import CoreConfig
    from ..models.keep import KeepConfig
    from ..models.vqgan import VQGANConfig

    vq = VQGANConfig(img_size=32, nf=32, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(16,), emb_dim=32)
    core = CoreConfig(vqgan=vq, codebook_size=64, dim_embd=64, n_head=1, n_layers=1, dim_mlp=64, connect_list=(16, 32))
    return KeepConfig(core=core, kalman_heads=2, kalman_head_dim=8, kalman_layers=1, cross_fuse=(16, 32), cross_heads=1,
                      cross_head_dim=32, flow=dict(feature_channels=32, num_transformer_layers=1))


def build_synthetic_keep(size: str = "full") -> nn.Module:
    """KEEP with the fixtures' synthetic weights ("full" = official configuration, "small" = 128², "tiny" = 32²),
    built in memory (no 600 MB file round trip), eval mode, fp32 CPU."""
    from ..models.keep import KEEP, KeepConfig
    from ..models.synthetic import shapes_of, small_keep_config, synthetic_state_dict

    config = {"full": KeepConfig, "small": small_keep_config, "tiny": tiny_keep_config}[size]()
    with torch.device("meta"):
        model = KEEP(config=config)
    model.load_state_dict(synthetic_state_dict(shapes_of(model)), assign=True)
    return model.eval().requires_grad_(False)

