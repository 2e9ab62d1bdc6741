"""Reading weight files safely and turning them into a flat state dict.

Files are read with `torch.load(weights_only=True)` (zip and legacy pickle formats), so a checkpoint can never run
code. Errors name the file and what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, WeightsNotFoundError

__all__ = [
    "StateDict", "WRAPPER_KEYS", "load_state_dict_file", "load_strict", "read_checkpoint", "unwrap_state_dict",
]

StateDict = dict[str, torch.Tensor]

# Wrapper keys used by BasicSR/CodeFormer (`params_ema`, `params`), mmagic/official DIC (`state_dict`, `netG`).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "netG", "model")


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load the raw object stored in `path` (tensors only) or raise a CheckpointError that says why not."""
    p = Path(path)
    if not p.exists():
        raise WeightsNotFoundError(f"weights file not found: {p} (download it with `vs-keep download NAME` or check the path)")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, expected a .pth weights file")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p}: file is empty (0 bytes); the download was probably interrupted, delete it and download again")
    if p.suffix == ".safetensors":
        return _read_safetensors(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Unsupported global" in msg or "GLOBAL" in msg:  # a class outside torch's tensor allowlist
            raise CheckpointError(
                f"{p}: holds Python objects other than tensors; refusing to unpickle it (weights_only). "
                "Re-save it as a plain state dict: torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(_unreadable(p, size, msg)) from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/KeyError/... for damaged files
        raise CheckpointError(_unreadable(p, size, str(exc) or type(exc).__name__)) from None


def _unreadable(p: Path, size: int, detail: str) -> str:
    return (
        f"{p}: not a PyTorch checkpoint, or truncated ({size} bytes; the download may have been interrupted: "
        f"delete it and download again): {_first_line(detail)}"
    )


def _read_safetensors(p: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{p}: reading .safetensors needs the 'safetensors' package (pip install safetensors)") from None
    try:
        return load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: invalid safetensors file: {_first_line(str(exc))}") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def unwrap_state_dict(obj: Any, path: str | os.PathLike[str]) -> tuple[StateDict, str | None]:
    """Return the flat tensor dict inside a checkpoint and the wrapper key it was found under (None when flat)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    wrapper = None
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj, wrapper = obj[key], key
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj.keys())[:8]))
        raise CheckpointError(f"{path}: no tensors found (top-level keys: {keys or 'none'})")
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, wrapper


def load_state_dict_file(path: str | os.PathLike[str]) -> tuple[StateDict, str | None]:
    """`read_checkpoint` + `unwrap_state_dict`."""
    return unwrap_state_dict(read_checkpoint(path), path)


def _names(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_strict(module: nn.Module, sd: StateDict, path: str | os.PathLike[str], what: str, *, assign: bool = False) -> None:
    """`module.load_state_dict(sd, strict=True)` with one readable CheckpointError naming the file, the expected
    network (`what`) and what differs: missing and unexpected keys, shape mismatches.

    assign: for a module built on the meta device (no random initialisation of a large network first): the file's
    tensors become the parameters, floating ones as float32 (the caller casts the module to its dtype after).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_names(mismatched, 3)})")
    if problems:
        raise CheckpointError(f"{path}: not a {what} checkpoint: " + "; ".join(problems))
    if assign:
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=assign)
    leftovers = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftovers:  # a tensor the checkpoint does not hold and the module did not create: a bug on our side
        raise CheckpointError(f"{path}: internal error, tensors left uninitialised after loading: {_names(leftovers)}")
