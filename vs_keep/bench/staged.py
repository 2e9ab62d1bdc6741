"""KEEP run stage by stage with per-stage timers and a pluggable codebook decoder.

Why: the benchmark needs the time of each stage (`models.keep.STAGES`: flow, encoders, gains, warp, transformer,
decoder), and the accelerated backends replace the decoder (TensorRT, OpenVINO). `StagedKeep` runs
`KEEP.prepare_chunk` / `KEEP.step` themselves with a stage hook (timer + autocast), so timings describe the real
path (with the eager decoder its output is bit-identical to `model(frames)`, tests/test_perf_runtime.py).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from ..models.keep import Chunk, DecoderFn, KeepState

__all__ = ["StagedKeep"]


class StagedKeep:
    """Restores chunks with `model`'s pieces; `times[stage]` accumulates seconds per stage.

    decoder: replacement decoder (default: the model's, as in `KEEP.step`). autocast: context factory entered
    around every stage (precision policy).
    """

    def __init__(self, model: nn.Module, *, decoder: DecoderFn | None = None,
                 autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
        self.model = model
        self.decoder = decoder
        self.autocast = autocast
        self.times: dict[str, float] = defaultdict(float)
        self.last_chunk: Chunk | None = None  # the most recent chunk (for accuracy reports)
        self._cuda = next(model.parameters()).device.type == "cuda"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with self.autocast():
            yield
        if self._cuda:
            torch.cuda.synchronize()
        self.times[name] += time.perf_counter() - start

    def __call__(self, frames: Tensor, traces: list[dict[str, Tensor]] | None = None) -> Tensor:
        """Restore one chunk (T,3,S,S) -> (T,3,S,S) raw outputs; `traces` collects per-frame intermediates."""
        with torch.inference_mode():
            chunk = self.last_chunk = self.model.prepare_chunk(frames, stage=self.stage)
            state = KeepState()
            outs = []
            for _ in range(chunk.length):
                trace: dict[str, Tensor] | None = {} if traces is not None else None
                out, state = self.model.step(chunk, state, trace, stage=self.stage, decoder=self.decoder)
                outs.append(out)
                if trace is not None:
                    traces.append(trace)
            return torch.cat(outs)
