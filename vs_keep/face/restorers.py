"""Restorer adapters: what the face pipeline calls with one track's aligned faces of one chunk.

A restorer is `callable(chunk) -> chunk`, chunk a (T, 3, S, S) float32 CPU tensor, RGB in [-1, 1]; it returns the
same shape (any range; the pipeline clamps to [-1, 1]). A restorer factory is `callable(track_id) -> restorer`
with a `face_size` attribute. A loaded network is run as its `ModelInfo` says, never by its kind: a recurrent one
restores a chunk as one clip (its state starts at the chunk's first frame), any other frame by frame.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, ContextManager

import torch
from torch import nn

from ..errors import InputError
from ..models.info import model_info

__all__ = [
    "ClipRun", "ModuleRestorer", "Restorer", "SharedRestorerFactory", "identity_restorer", "restorer_factory",
]

log = logging.getLogger(__name__)

Restorer = Callable[[torch.Tensor], torch.Tensor]


def identity_restorer(chunk: torch.Tensor) -> torch.Tensor:
    """Returns its input: for testing the geometry of the pipeline without a network."""
    return chunk


class ModuleRestorer:
    """A loaded face restorer network (`vs_keep.models.load`), run as its `ModelInfo` says: one call restores a
    chunk in one forward pass (a recurrent network: as one clip; any other: as one batch of frames); `ClipRun`
    steps a recurrent one frame by frame (`prepare_chunk`/`initial_state`/`step`).

    fidelity: the `w` of networks that take it (`takes_fidelity`; 0 = most generative, 1 = closest to the input).
    autocast: context factory entered around every model call (the precision policy of `vs_keep.runtime`).
    """

    def __init__(self, module: nn.Module, *, fidelity: float = 0.5,
                 autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
        self.module = module
        self.autocast = autocast
        self.info = model_info(module)
        if self.info.scale != 1:
            raise InputError(f"ModuleRestorer: a {self.info.kind!r} network changes the image size (x{self.info.scale}); "
                             "it is not a face restorer")
        self.kwargs = {"w": float(fidelity)} if self.info.takes_fidelity else {}
        self.face_size = int(module.face_size)
        p = next(module.parameters())
        self.device, self.dtype = p.device, p.dtype

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            out = self.module(chunk.to(self.device, self.dtype), **self.kwargs)
        return out.float().to(chunk.device)  # faces stay where the crops were (the GPU on the CUDA frame path)


class SharedRestorerFactory:
    """Hands every track the same restorer: the networks carry no state across chunks (`ClipRun` holds a chunk's
    state), so one loaded module serves all tracks."""

    def __init__(self, restorer: Restorer, face_size: int) -> None:
        self.restorer = restorer
        self.face_size = int(face_size)

    def __call__(self, track_id: int) -> Restorer:
        return self.restorer


def restorer_factory(module: nn.Module, *, fidelity: float = 0.5,
                     autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> SharedRestorerFactory:
    """Factory for a loaded restorer network (`vs_keep.models.load`); `fidelity`, `autocast`: see ModuleRestorer."""
    restorer = ModuleRestorer(module, fidelity=fidelity, autocast=autocast)
    log.debug("restorer: %s, face size %d", restorer.info.kind, restorer.face_size)
    return SharedRestorerFactory(restorer, restorer.face_size)


class ClipRun:
    """One track's clip of one chunk, restored lazily: `frame(k)` returns restored frame k, (3, S, S) in model
    range, doing only the work needed so far. For a recurrent network (KEEP) that is `prepare_chunk` once, then one
    step per new frame (consecutive requests advance the state one step each; frame k costs at most k + 1 steps);
    any other `ModuleRestorer` runs per frame; any other restorer runs on the whole clip at the first request.
    Thread-safe.

    prime: the clip's first `prime` frames only warm up the restorer (KEEP's state, `overlap=`): `frame(k)` is clip
    frame `prime + k`, so frame k costs at most prime + k + 1 steps; `run_frame(i)` reads any frame of the run,
    priming frames included (the stabilizer's history). prime=0 is the official chunk."""

    def __init__(self, restorer: Restorer, clip: torch.Tensor, prime: int = 0) -> None:
        self.clip = clip
        self.restorer = restorer
        self.total = int(clip.shape[0])
        self.prime = int(prime)
        if not 0 <= self.prime < self.total:
            raise InputError(f"ClipRun: prime={prime} must leave at least one frame of the {self.total}-frame clip")
        self.length = self.total - self.prime
        self.outputs: list[torch.Tensor | None] = [None] * self.total
        self.steps = 0  # model frames computed (seek-cost accounting)
        self._lock = threading.Lock()
        self._chunk = None
        self._state = None

    def frame(self, k: int) -> torch.Tensor:
        if not 0 <= k < self.length:
            raise IndexError(f"frame {k} outside the clip of {self.length}")
        return self.run_frame(self.prime + k)

    def run_frame(self, i: int) -> torch.Tensor:
        """Frame i of the whole run (0 = first priming frame)."""
        if not 0 <= i < self.total:
            raise IndexError(f"run frame {i} outside the run of {self.total}")
        with self._lock:
            if self.outputs[i] is None:
                self._compute(i)
            out = self.outputs[i]
        assert out is not None
        return out

    def _compute(self, k: int) -> None:
        r = self.restorer
        if isinstance(r, ModuleRestorer) and r.info.recurrent:
            m = r.module
            with torch.inference_mode(), r.autocast():
                if self._chunk is None:
                    self._chunk = m.prepare_chunk(self.clip.to(r.device, r.dtype))
                    self._state = m.initial_state()
                while self._state.t <= k:
                    t = self._state.t
                    out, self._state = m.step(self._chunk, self._state)
                    self.outputs[t] = out[0].float().to(self.clip.device)
                    self.steps += 1
                if self._state.t >= self.total:  # done: drop the chunk's features and flows
                    self._chunk = self._state = None
        elif isinstance(r, ModuleRestorer):  # per frame
            self.outputs[k] = r(self.clip[k : k + 1])[0]
            self.steps += 1
        else:
            y = r(self.clip)
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(self.clip.shape):
                raise InputError(
                    f"restorer returned {getattr(y, 'shape', type(y).__name__)}, expected a tensor of shape {tuple(self.clip.shape)}"
                )
            for i in range(self.total):
                self.outputs[i] = y[i]
            self.steps += self.total
