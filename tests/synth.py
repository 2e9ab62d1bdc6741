"""Synthetic weights from key names and shapes alone: the recipe the official golden fixtures were made with.

The recipe lives in `vs_keep.models.synthetic` (benchmarks use it too); this module adds the JSON shape-list
reader and the legacy-format writer the tests use.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vs_keep.models.synthetic import synthetic_state_dict as synth_state_dict  # noqa: F401
from vs_keep.models.synthetic import synthetic_tensor as synth_tensor  # noqa: F401


def load_shapes(path: str | Path) -> list[tuple[str, list[int]]]:
    """(key, shape) pairs in the official state-dict order from a *_state_dict_shapes.json file."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        items = data.items()
    else:  # list of [key, shape] or {"key":..., "shape":...}
        items = [(d["key"], d["shape"]) if isinstance(d, dict) else (d[0], d[1]) for d in data]
    return [(k, list(v)) for k, v in items]


def save_legacy(sd: dict[str, torch.Tensor], path: str | Path, wrapper: str | None = None) -> Path:
    """Save like the official releases: legacy (non-zip) pickle, optionally under a wrapper key."""
    obj = {wrapper: sd} if wrapper else sd
    torch.save(obj, str(path), _use_new_zipfile_serialization=False)
    return Path(path)
