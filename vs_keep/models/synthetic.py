"""Deterministic synthetic weights and small model configs, for tests, benchmarks and demos without the real files.

`synthetic_state_dict` follows the recipe of the official golden fixtures (shared/fixtures/README.md): every tensor
is seeded from the CRC32 of its key, so the same key and shape always give the same values, whatever the model.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "build_synthetic_keep", "shapes_of", "small_codeformer_config", "small_keep_config", "synthetic_state_dict",
    "synthetic_tensor", "tiny_keep_config", "write_synthetic_checkpoint",
]


def synthetic_tensor(key: str, shape: Iterable[int], salt: int = 0) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) ^ salt)
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if key.endswith("bias"):
        return 0.01 * r
    if len(shape) == 1:
        return 1.0 + 0.1 * r
    if key == "quantize.embedding.weight":
        return r
    if key == "position_emb":
        return 0.02 * r
    return r / math.sqrt(math.prod(shape[1:]))


def synthetic_state_dict(shapes: Iterable[tuple[str, Iterable[int]]], salt: int = 0) -> dict[str, torch.Tensor]:
    return {k: synthetic_tensor(k, s, salt) for k, s in shapes}


def shapes_of(module: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]


def small_keep_config(connect: tuple[int, ...] = (16, 32, 64), cross: tuple[int, ...] = (16, 32)):  # -> KeepConfig
    """A KEEP that restores 128x128 faces with ~1/50 of the compute; same structure, all code paths.

    connect / cross: SFT and cross-frame fusion sizes (sizes 16..128 exist); (32, 64, 128) with cross (16, 32) is
    the small image of the 32/64/128/256 layout: SFT above the standard sizes and a cross-frame size without SFT.
    (Imports kept local: keep.py pulls in GMFlow.)
    """
    from .core import CoreConfig
    from .keep import KeepConfig
    from .vqgan import VQGANConfig

    vq = VQGANConfig(img_size=128, nf=32, ch_mult=(1, 2, 2, 4), res_blocks=1, attn_resolutions=(16,), emb_dim=64)
    core = CoreConfig(vqgan=vq, codebook_size=256, dim_embd=128, n_head=2, n_layers=2, dim_mlp=256, connect_list=tuple(connect))
    return KeepConfig(
        core=core, kalman_heads=8, kalman_head_dim=8, kalman_layers=2, cross_fuse=tuple(cross), cross_heads=4, cross_head_dim=32,
        flow=dict(feature_channels=32, num_transformer_layers=2),
    )


def tiny_keep_config():  # -> KeepConfig
    """A 32x32 KEEP with every code path (flow, gains, SFT at 16/32, CFA at 16/32): ~40 ms a frame on one core,
    for memory runs over thousands of frames."""
    from .core import CoreConfig
    from .keep import KeepConfig
    from .vqgan import VQGANConfig

    vq = VQGANConfig(img_size=32, nf=32, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(16,), emb_dim=32)
    core = CoreConfig(vqgan=vq, codebook_size=64, dim_embd=64, n_head=1, n_layers=1, dim_mlp=64, connect_list=(16, 32))
    return KeepConfig(core=core, kalman_heads=2, kalman_head_dim=8, kalman_layers=1, cross_fuse=(16, 32), cross_heads=1,
                      cross_head_dim=32, flow=dict(feature_channels=32, num_transformer_layers=1))


def build_synthetic_keep(size: str = "full") -> nn.Module:
    """KEEP with the fixtures' synthetic weights ("full" = official configuration, "small" = 128², "tiny" = 32²),
    built in memory (no 600 MB file round trip), eval mode, fp32 CPU."""
    from .keep import KEEP, KeepConfig

    config = {"full": KeepConfig, "small": small_keep_config, "tiny": tiny_keep_config}[size]()
    with torch.device("meta"):
        model = KEEP(config=config)
    model.load_state_dict(synthetic_state_dict(shapes_of(model)), assign=True)
    return model.eval().requires_grad_(False)


def small_codeformer_config():  # -> CoreConfig
    from .core import CoreConfig
    from .vqgan import VQGANConfig

    vq = VQGANConfig(img_size=128, nf=32, ch_mult=(1, 2, 2, 4), res_blocks=1, attn_resolutions=(16,), emb_dim=64)
    return CoreConfig(vqgan=vq, codebook_size=256, dim_embd=128, n_head=2, n_layers=2, dim_mlp=256, connect_list=(32, 64))


def write_synthetic_checkpoint(
    path: str | Path, model: str = "keep", size: str = "small", salt: int = 0, *, config: Any = None, release: str = "v0.1.0"
) -> Path:
    """Write a checkpoint of synthetic weights in the official layout (legacy pickle; CodeFormer under params_ema).

    KEEP only: `config` (a KeepConfig) replaces the size's config; release="v1.0.0" writes KEEP v1.0.0's key names
    (`cft.*`, `cfa.*`) under `params_ema`, as the authors' conversion of their v1.0.0 files does.
    """
    if release not in ("v0.1.0", "v1.0.0") or (release != "v0.1.0" and model != "keep"):
        raise InputError(f"write_synthetic_checkpoint: release must be 'v0.1.0' or (KEEP only) 'v1.0.0', not {release!r}")
    if model == "keep":
        from .keep import KEEP, V1_PREFIXES, KeepConfig

        config = config or (small_keep_config() if size == "small" else KeepConfig())
        with torch.device("meta"):
            net: nn.Module = KEEP(config=config)
        wrapper = "params_ema" if release == "v1.0.0" else None
    elif model == "codeformer":
        from .codeformer import CodeFormer
        from .core import CoreConfig

        config = small_codeformer_config() if size == "small" else CoreConfig()
        with torch.device("meta"):
            net = CodeFormer(config=config)
        wrapper = "params_ema"
    elif model == "dic":
        from .dic import DICNet

        small = dict(num_features=8, num_groups=2, num_fusion_blocks=2, fusion_mid_channels=40, hg_features=32)
        with torch.device("meta"):
            net = DICNet(**(small if size == "small" else {}))
        wrapper = "state_dict"  # the official DIC checkpoint layout
    else:
        raise InputError(f"write_synthetic_checkpoint: model must be 'keep', 'codeformer' or 'dic', not {model!r}")
    sd = synthetic_state_dict(shapes_of(net), salt)
    if release == "v1.0.0":
        to_v1 = {ours: theirs for theirs, ours in V1_PREFIXES.items()}
        sd = {next((to_v1[p] + k[len(p):] for p in to_v1 if k.startswith(p)), k): v for k, v in sd.items()}
    obj = {wrapper: sd} if wrapper else sd
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, str(path), _use_new_zipfile_serialization=False)
    return path
