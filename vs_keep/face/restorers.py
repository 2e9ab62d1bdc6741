"""Restorer adapters: what the face pipeline calls with one track's aligned faces of one chunk.

A restorer is `callable(chunk) -> chunk`, chunk a (T, 3, S, S) float32 CPU tensor, RGB in [-1, 1]; it returns the
same shape (any range; the pipeline clamps to [-1, 1]). A restorer factory is `callable(track_id) -> restorer`
with a `face_size` attribute. KEEP restores a chunk as one clip (its recurrent state starts at the chunk's first
frame); CodeFormer restores frame by frame.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
    """Runs a loaded KEEP module (whole chunk per call) or CodeFormer module (`batch` frames per call).

    fidelity: CodeFormer's w (0 = most generative, 1 = closest to the input); ignored by KEEP.
    autocast: context factory entered around every model call (the precision policy of `vs_keep.runtime`).
    """

    def __init__(self, module: nn.Module, *, fidelity: float = 0.5, batch: int = 4,
                 autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
        self.module = module
        self.autocast = autocast
        self.info = model_info(module)
        self.kind = self.info.kind
        if self.kind not in ("keep", "codeformer"):
            raise InputError(f"ModuleRestorer: restores with KEEP or CodeFormer, got a {self.kind!r} network")
        self.fidelity = float(fidelity)
        self.batch = max(int(batch), 1)
        self.face_size = int(getattr(module, "face_size", 512))
        p = next(module.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None else torch.float32

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.info.takes_fidelity:
            out: Any = self.module(x, w=self.fidelity, adain=True)
        else:
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        x = chunk.to(self.device, self.dtype)
        with torch.inference_mode(), self.autocast():
            if not self.info.recurrent:  # per frame: batches of `batch` frames
                out = torch.cat([self._forward(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])
            else:
                out = self._forward(x)
        return out.float().to(chunk.device)  # faces stay where the crops were (the GPU on the CUDA frame path)


class SharedRestorerFactory:
    """Hands every track the same restorer: KEEP and CodeFormer carry no state across chunks, so one loaded
    module serves all tracks."""

    def __init__(self, restorer: Restorer, face_size: int) -> None:
        self.restorer = restorer
        self.face_size = int(face_size)

    def __call__(self, track_id: int) -> Restorer:
        return self.restorer


def restorer_factory(
    model: str | os.PathLike[str] | nn.Module,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    fidelity: float = 0.5,
    download: bool = False,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> SharedRestorerFactory:
    """Factory for a KEEP or CodeFormer model: a loaded module, a weights path or a registry name ("keep",
    "codeformer"; looked up in the weights cache, downloaded only when `download`). `autocast`: see ModuleRestorer."""
    if isinstance(model, nn.Module):
        module = model
    else:
        from ..models import load
        from ..weights import resolve

        module = load(resolve(model, download=download), device=device, dtype=dtype)
    restorer = ModuleRestorer(module, fidelity=fidelity, autocast=autocast)
    log.debug("restorer: %s, face size %d", restorer.kind, restorer.face_size)
    return SharedRestorerFactory(restorer, restorer.face_size)


class ClipRun:
    """One track's clip of one chunk, restored lazily: `frame(k)` returns restored frame k, (3, S, S) in model
    range, doing only the work needed so far. For KEEP that is `prepare_chunk` once, then one recurrent step per new
    frame (consecutive requests advance the state one step each; frame k costs at most k + 1 steps). CodeFormer
    runs per frame; any other restorer runs on the whole clip at the first request. Thread-safe.

    prime: the clip's first `prime` frames only warm up the restorer (KEEP's state, `overlap=`): `frame(k)` is clip
    frame `prime + k`, so frame k costs at most prime + k + 1 steps; `run_frame(i)` reads any frame of the run,
    priming frames included (the stabilizer's history). prime=0 is the official chunk."""

    def __init__(self, restorer: Restorer, clip: torch.Tensor, prime: int = 0) -> None:
        import threading

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
        #: the network's descriptor when the restorer is a ModuleRestorer (None: any other callable)
        self._info = getattr(restorer, "info", None)
        self._module = getattr(restorer, "module", None)

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
        if self._info is not None and self._info.recurrent:
            m = self._module
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
        elif self._info is not None:  # per frame
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
