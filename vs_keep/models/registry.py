"""The one ordered list of supported checkpoints, and `load`: recognise, build, load strictly.

Each model module declares everything the registry needs (no I/O, no registration side effects):
  KEY_MARKERS               a few keys every checkpoint of the family has (names the closest family in errors)
  detect(sd) -> bool        cheap key test; may have false positives, so order matters (first match wins)
  convert(sd) -> sd         rename foreign layouts (e.g. mmagic) to our key names; identity when not needed
  build(sd) -> nn.Module    construct the network with hyperparameters read from tensor shapes; its class declares
                            `info = ModelInfo(...)` (`models.info`), what the engine reads of it
The module is built on the meta device and the checkpoint tensors are assigned to it, so loading a 600 MB
checkpoint does not first random-initialise 158 M parameters.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import StateDict, load_state_dict_file, load_strict

__all__ = ["MODELS", "load"]

#: kind (`ModelInfo.kind`) -> its model module, in detection order; a module is imported only when it is tried
MODELS = {"keep": "vs_keep.models.keep", "codeformer": "vs_keep.models.codeformer", "dic": "vs_keep.models.dic"}


def _detect(sd: StateDict, path: str | os.PathLike[str]) -> tuple[str, ModuleType]:
    """The kind and module of the first family whose detector accepts `sd`, or a CheckpointError naming the
    closest one."""
    impls = {}
    for kind, name in MODELS.items():
        impls[kind] = impl = importlib.import_module(name)
        if impl.detect(sd):
            return kind, impl
    keys = list(sd)
    prefixes = sorted({k.split(".")[0] for k in keys})[:12]
    closest = max(impls, key=lambda kind: sum(k in sd for k in impls[kind].KEY_MARKERS))
    missing = [k for k in impls[closest].KEY_MARKERS if k not in sd]
    hint = ""
    if len(missing) < len(impls[closest].KEY_MARKERS):
        hint = f"; closest supported model is '{closest}', but it lacks {', '.join(missing[:4])}"
    raise CheckpointError(
        f"{path}: unknown model ({len(keys)} tensors; top-level key prefixes: {', '.join(prefixes)}){hint}. "
        f"Supported: {', '.join(MODELS)}"
    )


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Read a checkpoint, recognise its model by its keys, load it strictly and return the eval-mode module;
    `model_info(module)` (its class's `info`) is the descriptor the engine, the CLI and the tests read.

    KEEP (flat, 896 keys): `module(frames)` with frames (T,3,H,W) RGB in [-1,1] restores one chunk.
    CodeFormer (`params_ema`/`params`/flat, 515 keys): `module(images, w=0.5)`.
    DIC (official or mmagic layout): `module(x)` with x (B,3,16,16) in [0,1] returns (sr_list, heatmap_list).
    """
    sd, _wrapper = load_state_dict_file(path)
    kind, impl = _detect(sd, path)
    sd = impl.convert(sd)
    try:
        with torch.device("meta"):
            module = impl.build(sd)
    except CheckpointError:
        raise
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: looks like '{kind}' but its tensors do not describe a valid network: {exc}") from None
    load_strict(module, sd, path, f"'{kind}'", assign=True)
    module.eval().requires_grad_(False)
    return module.to(device=device, dtype=dtype)
