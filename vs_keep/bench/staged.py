"""KEEP run stage by stage with pluggable stage implementations and per-stage timers.

Why: the benchmark needs the time of each stage (flow, encoders, gains, warp, transformer, decoder), and the
accelerated backends replace single stages (onnxruntime flow, TensorRT / onnxruntime decoder). `StagedKeep`
calls the model's public pieces in `KEEP.step`'s order; with the default stage implementations its output is
bit-identical to `model(frames)` (tests/test_perf_runtime.py checks this), so timings describe the real path.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from ..kernels import flow_warp
from ..models.kalman import kalman_update
from ..models.keep import Chunk, KeepState
from ..runtime.decoder import DecoderFn, torch_decoder

__all__ = ["FlowFn", "STAGES", "StagedKeep"]

#: (cur (N,3,S,S), prev (N,3,S,S)) -> backward flow (N,2,S,S)
FlowFn = Callable[[Tensor, Tensor], Tensor]
STAGES = ("flow", "encoders", "gains", "warp", "transformer", "decoder")


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
        m = self.model
        m._check_frames(frames)
        with self.stage("encoders"):
            z, feats = m.observe(frames)
        with self.stage("flow"):
            if frames.shape[0] < 2:
                flows = None
            elif self.flow is None:
                flows = m.compute_flows(frames)
            else:
                flows = self.flow(frames[1:], frames[:-1])
        with self.stage("gains"):
            gains = m.compute_gains(z)
        return Chunk(frames=frames, z_obs=z, feats=feats, flows=flows, gains=gains)

    def step(self, chunk: Chunk, state: KeepState, trace: dict[str, Tensor] | None = None) -> tuple[Tensor, KeepState]:
        m, t = self.model, state.t
        z_obs = chunk.z_obs[t : t + 1]
        if t == 0:
            z_hat = z_obs
        else:
            assert chunk.flows is not None and state.prev_out is not None
            with self.stage("warp"):
                warped = flow_warp(state.prev_out, chunk.flows[t - 1 : t])
            with self.stage("encoders"):
                z_prime, _ = m.hq_encoder(warped)
            with self.stage("gains"):
                z_hat = kalman_update(z_obs, z_prime, chunk.gains[t : t + 1])
        with self.stage("transformer"):
            logits = m.code_logits(z_hat)
            idx = logits.argmax(dim=2)
        with self.stage("decoder"):
            feats = {r: chunk.feats[r][t : t + 1] for r in m.connect_list}
            out, memory = self.decoder(idx, feats, state.memory if t > 0 else None)
        if trace is not None:
            trace.update(z_hat=z_hat, logits=logits, idx=idx)
        return out, KeepState(t=t + 1, prev_out=out, memory=memory)

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
