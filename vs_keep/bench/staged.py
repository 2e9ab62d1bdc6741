"""KEEP run stage by stage with pluggable stage implementations and per-stage timers.

Why: the benchmark needs the time of each stage (flow, encoders, gains, warp, transformer, decoder), and the
accelerated backends replace single stages (onnxruntime flow, TensorRT / onnxruntime decoder). `StagedKeep`
runs `KEEP.prepare_chunk` / `KEEP.step` themselves with a stage hook (timer + autocast) and the replacement
stages, so timings describe the real path (with the default stages its output is bit-identical to
`model(frames)`, tests/test_perf_runtime.py).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from ..models.keep import STAGES, Chunk, FlowFn, KeepState
from ..runtime.decoder import DecoderFn, torch_decoder

__all__ = ["FlowFn", "STAGES", "StagedKeep"]


class StagedKeep:
    """Restores chunks with `model`'s pieces; `times[stage]` accumulates seconds per stage.

    flow: replacement flow function (default: the model's batched GMFlow call). decoder: replacement decoder
    (default: eager, = KEEP.step). autocast: context factory entered around every stage (precision policy).
    """

    def __init__(self, model: nn.Module, *, flow: FlowFn | None = None, decoder: DecoderFn | None = None,
                 autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
        self.model = model
        self.flow = flow
        self.decoder = decoder or torch_decoder(model)
        self.autocast = autocast
        self.times: dict[str, float] = defaultdict(float)
        self.last_chunk: Chunk | None = None  # the most recent chunk (for accuracy reports)
        param = next(model.parameters())
        self._cuda = param.device.type == "cuda"

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

    def reset_times(self) -> None:
        self.times.clear()

    def prepare(self, frames: Tensor) -> Chunk:
        return self.model.prepare_chunk(frames, stage=self.stage, flow=self.flow)

    def step(self, chunk: Chunk, state: KeepState, trace: dict[str, Tensor] | None = None) -> tuple[Tensor, KeepState]:
        return self.model.step(chunk, state, trace, stage=self.stage, decoder=self.decoder)

    def __call__(self, frames: Tensor, traces: list[dict[str, Tensor]] | None = None) -> Tensor:
        """Restore one chunk (T,3,S,S) -> (T,3,S,S) raw outputs; `traces` collects per-frame intermediates."""
        with torch.inference_mode():
            chunk = self.last_chunk = self.prepare(frames)
            state = KeepState()
            outs = []
            for _ in range(chunk.length):
                trace: dict[str, Tensor] | None = {} if traces is not None else None
                out, state = self.step(chunk, state, trace)
                outs.append(out)
                if traces is not None and trace is not None:
                    traces.append(trace)
            return torch.cat(outs)
