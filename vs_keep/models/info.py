"""What a loaded network is, declared by its class (`info`), so that the engine, the CLI and the tests read it
instead of guessing from attribute names or forward signatures."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import InputError

__all__ = ["ModelInfo", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """kind: the registry id ("keep", "codeformer", "dic"). recurrent: restores a chunk step by step with a state
    carried from frame to frame (`prepare_chunk`/`initial_state`/`step`). takes_fidelity: its forward takes the
    fidelity weight `w`. scale: output side / input side (1 for the face restorers, 8 for DIC)."""

    kind: str
    recurrent: bool
    takes_fidelity: bool
    scale: int = 1


def model_info(module: nn.Module) -> ModelInfo:
    """The descriptor of a network that `vs_keep.models.load` builds; an InputError for any other module."""
    info = getattr(type(module), "info", None)
    if not isinstance(info, ModelInfo):
        raise InputError(f"{type(module).__name__} is not a vs-keep network (load it with vs_keep.models.load)")
    return info
