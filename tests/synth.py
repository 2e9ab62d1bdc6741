"""Synthetic weights from key names and shapes alone: the recipe the official golden fixtures were made with.

See shared/fixtures/README.md. `synth_state_dict(shapes)` reproduces the official fixture weights bit for bit
(SALT = 0), so our loader and networks can be compared with the official outputs without the real checkpoints.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Iterable

import torch


def synth_tensor(key: str, shape: Iterable[int], salt: int = 0) -> torch.Tensor:
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


def load_shapes(path: str | Path) -> list[tuple[str, list[int]]]:
    """(key, shape) pairs in the official state-dict order from a *_state_dict_shapes.json file."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        items = data.items()
    else:  # list of [key, shape] or {"key":..., "shape":...}
        items = [(d["key"], d["shape"]) if isinstance(d, dict) else (d[0], d[1]) for d in data]
    return [(k, list(v)) for k, v in items]


def synth_state_dict(shapes: Iterable[tuple[str, Iterable[int]]], salt: int = 0) -> dict[str, torch.Tensor]:
    return {k: synth_tensor(k, s, salt) for k, s in shapes}


def save_legacy(sd: dict[str, torch.Tensor], path: str | Path, wrapper: str | None = None) -> Path:
    """Save like the official releases: legacy (non-zip) pickle, optionally under a wrapper key."""
    obj = {wrapper: sd} if wrapper else sd
    torch.save(obj, str(path), _use_new_zipfile_serialization=False)
    return Path(path)
