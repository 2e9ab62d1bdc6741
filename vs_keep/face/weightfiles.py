"""Locating and reading user-supplied auxiliary weight files (RetinaFace, ParseNet); they are loaded
with the one strict loader, `vs_keep.models.checkpoint.load_strict`.

Nothing here downloads: a missing file raises WeightsNotFoundError naming the file and the `vs-keep download`
command that fetches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import WeightsNotFoundError

__all__ = ["find_weights", "load_plain_state_dict"]


def find_weights(path: str | os.PathLike[str] | None, registry_name: str, filename: str) -> Path:
    """The weight file to use: `path` if given (must exist), else `filename` in the vs-keep weights cache."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise WeightsNotFoundError(
                f"{registry_name} weights not found: {p} does not exist "
                f"(download it with `vs-keep download {registry_name}` or pass the right path)"
            )
        return p
    from .. import weights as registry

    p = registry.cache_dir() / filename
    if not p.is_file():
        raise WeightsNotFoundError(
            f"{registry_name} weights not found: {p} does not exist; run `vs-keep download {registry_name}` "
            "or pass weights=PATH"
        )
    return p


def load_plain_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Flat tensor dict of a checkpoint (wrappers such as `params_ema` and DataParallel `module.` removed)."""
    from ..models.checkpoint import load_state_dict_file

    sd, _ = load_state_dict_file(path)
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
