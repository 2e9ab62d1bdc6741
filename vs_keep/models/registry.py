"""The one ordered list of supported checkpoints, and `load`: recognise, build, load strictly.

Each architecture module exposes three functions (no I/O, no registration side effects):
  detect(sd) -> bool        cheap key test; may have false positives, so order matters (first match wins)
  convert(sd) -> sd         rename foreign layouts (e.g. mmagic) to our key names; identity when not needed
  build(sd) -> nn.Module    construct the network with hyperparameters read from tensor shapes
The module is built on the meta device and the checkpoint tensors are assigned to it, so loading a 600 MB
checkpoint does not first random-initialise 158 M parameters.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import StateDict, load_state_dict_file, load_strict

__all__ = ["ARCHITECTURES", "Architecture", "detect", "load"]


@dataclass(frozen=True)
class Architecture:
    """One supported checkpoint family. `module` is imported only when the family is tried."""

    id: str
    module: str
    #: a few keys that every checkpoint of this family has; used to name the closest family in errors
    marker_keys: tuple[str, ...]

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        "keep",
        "vs_keep.models.keep",
        ("kalman_filter.kalman_gain_calculator.3.weight", "hq_encoder.blocks.0.weight", "flownet.model.backbone.conv1.weight", "quantize.embedding.weight"),
    ),
    Architecture(
        "codeformer",
        "vs_keep.models.codeformer",
        ("quantize.embedding.weight", "position_emb", "ft_layers.0.self_attn.in_proj_weight", "idx_pred_layer.1.weight"),
    ),
    Architecture(
        "dic",
        "vs_keep.models.dic",
        # two official-layout keys, then the same tensors in mmagic's layout
        ("first_block.compress_in.0.weight", "HG.compress_in.weight", "generator.first_block.conv_first.0.weight", "generator.hour_glass.first_conv.weight"),
    ),
)


def detect(sd: StateDict, path: str | os.PathLike[str]) -> Architecture:
    """The first architecture whose detector accepts `sd`, or a CheckpointError naming the closest one."""
    for arch in ARCHITECTURES:
        try:
            impl = arch.impl()
        except ModuleNotFoundError:
            continue
        if impl.detect(sd):
            return arch
    keys = list(sd)
    prefixes = sorted({k.split(".")[0] for k in keys})[:12]
    closest = max(ARCHITECTURES, key=lambda a: sum(k in sd for k in a.marker_keys))
    hits = sum(k in sd for k in closest.marker_keys)
    hint = ""
    if hits:
        missing = [k for k in closest.marker_keys if k not in sd]
        hint = f"; closest supported model is '{closest.id}', but it lacks {', '.join(missing[:4])}"
    raise CheckpointError(
        f"{path}: unknown model ({len(keys)} tensors; top-level key prefixes: {', '.join(prefixes)}){hint}. "
        f"Supported: {', '.join(a.id for a in ARCHITECTURES)}"
    )


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Read a checkpoint, recognise its model by its keys, load it strictly and return the eval-mode module;
    `model_info(module)` (its class's `info`) is the descriptor the engine, the CLI and the tests read.

    KEEP (flat, 896 keys): `module(frames)` with frames (T,3,H,W) RGB in [-1,1] restores one chunk.
    CodeFormer (`params_ema`/`params`/flat, 515 keys): `module(images, w=0.5, adain=True)`.
    DIC (official or mmagic layout): `module(x)` with x (B,3,16,16) in [0,1] returns (sr_list, heatmap_list).
    """
    sd, _wrapper = load_state_dict_file(path)
    arch = detect(sd, path)
    impl = arch.impl()
    sd = impl.convert(sd)
    try:
        with torch.device("meta"):
            module = impl.build(sd)
    except CheckpointError:
        raise
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: looks like '{arch.id}' but its tensors do not describe a valid network: {exc}") from None
    load_strict(module, sd, path, f"'{arch.id}'", assign=True)
    module.eval().requires_grad_(False)
    return module.to(device=device, dtype=dtype)
