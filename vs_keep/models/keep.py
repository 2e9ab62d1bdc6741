"""KEEP: Kalman-inspired feature propagation on the CodeFormer core.

A chunk of T aligned frames is restored in two stages:

1. `prepare_chunk(frames)` (whole chunk): LQ encoder latents z_obs (the observations) and SFT features of every
   frame, backward optical flow between consecutive frames (GMFlow), and the Kalman gains of every frame. The gains
   depend on every frame of the chunk (non-causal temporal attention), so this needs all T frames.
2. `step(chunk, state)` (one frame, in order): predict the latent by warping the previous restored frame with the
   flow and re-encoding it (HQ encoder), mix prediction and observation with the gain, look up codes with the
   transformer, decode with SFT fusion and cross-frame attention to the previous frame's decoder features.

`forward(frames)` = prepare + T steps; it equals the official `net(x[None], need_upscale=False)[0]` for one chunk.
The state is an explicit immutable value, so streaming callers (the VapourSynth filter) can hold and replay it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..kernels import flow_warp
from .core import CodeTransformerCore, CoreConfig, core_config_from_state_dict
from .info import ModelInfo
from .fusion import CrossFrameAttention
from .gmflow import GMFlow, gmflow_kwargs_from_state_dict
from .kalman import KalmanGainNet, kalman_update
from .vqgan import Encoder

__all__ = [
    "KEEP", "KEY_MARKERS", "STAGES", "V1_PREFIXES", "Chunk", "DecoderFn", "KeepConfig", "KeepState", "StageHook",
    "build", "convert", "detect", "keep_config_from_state_dict",
]

#: (idx (1, L), SFT features {res: (1, C, r, r)}, CFA memory or None at t = 0) -> (raw output, new memory): the
#: decode half of a step. `KEEP.decode_codes` is the eager one; `vs_keep.runtime` runs the same graph in
#: TensorRT / OpenVINO.
DecoderFn = Callable[[Tensor, dict[int, Tensor], "dict[int, Tensor] | None"], tuple[Tensor, dict[int, Tensor]]]
#: stage name -> context entered around that stage's work (per-stage timers, precision islands); see `STAGES`
StageHook = Callable[[str], ContextManager[Any]]
#: the stages `prepare_chunk` and `step` report to a StageHook, in the order of the work
STAGES = ("flow", "encoders", "gains", "warp", "transformer", "decoder")


def _no_stage(name: str) -> ContextManager[Any]:
    return contextlib.nullcontext()

KEY_MARKERS = ("kalman_filter.kalman_gain_calculator.3.weight", "hq_encoder.blocks.0.weight", "flownet.model.backbone.conv1.weight")


@dataclass(frozen=True)
class KeepConfig:
    """KEEP hyperparameters. Defaults = the released inference settings."""

    core: CoreConfig = CoreConfig(connect_list=(16, 32, 64))
    kalman_heads: int = 8
    kalman_head_dim: int = 48
    kalman_layers: int = 3
    cross_fuse: tuple[int, ...] = (16, 32)
    cross_heads: int = 4
    cross_head_dim: int = 256
    flow: dict = field(default_factory=dict)  # GMFlow keyword arguments (defaults = KEEP's config)


@dataclass(frozen=True)
class Chunk:
    """Whole-chunk precomputation. Shapes: frames (T,3,S,S); z_obs (T,emb,s,s); feats[r] (T,C_r,r,r);
    flows (T-1,2,S,S), flow k maps frame k+1's grid into frame k; gains (T,1,s,s)."""

    frames: Tensor
    z_obs: Tensor
    feats: dict[int, Tensor]
    flows: Tensor | None
    gains: Tensor

    @property
    def length(self) -> int:
        return int(self.z_obs.shape[0])


@dataclass(frozen=True)
class KeepState:
    """What crosses from frame t-1 to frame t inside a chunk. `t` is the index of the next frame to restore."""

    t: int = 0
    prev_out: Tensor | None = None  # (1,3,S,S) raw generator output of frame t-1 (not clamped)
    memory: dict[int, Tensor] = field(default_factory=dict)  # CFA memory per resolution, (1,C,r,r)


class FlowNet(nn.Module):
    """Holder that gives GMFlow its checkpoint prefix `flownet.model.`; frozen weights shipped inside KEEP's file."""

    def __init__(self, **gmflow_kwargs: int) -> None:
        super().__init__()
        self.model = GMFlow(**gmflow_kwargs)

    def forward(self, cur: Tensor, prev: Tensor) -> Tensor:
        return self.model(cur, prev)


class KEEP(CodeTransformerCore):
    """KEEP network with the official attribute names (896 keys for the released configuration)."""

    info = ModelInfo("keep", recurrent=True, takes_fidelity=False)

    def __init__(self, *, config: KeepConfig) -> None:
        super().__init__(config=config.core)
        v = config.core.vqgan
        self.keep_config = config
        self.flownet = FlowNet(**config.flow)
        self.kalman_filter = KalmanGainNet(
            dim=v.emb_dim, heads=config.kalman_heads, head_dim=config.kalman_head_dim, layers=config.kalman_layers
        )
        self.hq_encoder = Encoder(config=v)
        channels = {r: v.nf * m for r, m in zip((v.img_size // 2**i for i in range(len(v.ch_mult))), v.ch_mult)}
        self.cross_fuse = nn.ModuleDict(
            {
                str(r): CrossFrameAttention(channels=channels[r], heads=config.cross_heads, head_dim=config.cross_head_dim)
                for r in config.cross_fuse
            }
        )
        self.cross_fuse_list = tuple(config.cross_fuse)
        # The official loop visits every generator block and applies SFT (connect list) then CFA (cross list) at
        # each: a CFA size without SFT (16 in the 32/64/128/256 layout) is a fusion point too.
        self.fusion_sizes = tuple(sorted(set(self.connect_list) | set(self.cross_fuse_list)))
        self.codebook_decoder: DecoderFn | None = None

    def set_decoder(self, decoder: "DecoderFn | None") -> None:
        """Run the decode half of `step` (quantizer lookup, generator, SFT, CFA) with `decoder` instead of eager
        torch (`decode_codes`): a TensorRT or OpenVINO graph from `vs_keep.runtime.backends`. None restores the
        eager path."""
        self.__dict__["codebook_decoder"] = decoder  # a plain attribute even if `decoder` is an nn.Module

    # ---- chunk stage ---------------------------------------------------------------------------------------

    def observe(self, frames: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        """LQ latents and SFT features of each frame, one frame at a time (bounded activation memory)."""
        outs = [self.encode(f[None]) for f in frames]
        z = torch.cat([o[0] for o in outs])
        feats = {r: torch.cat([o[1][r] for o in outs]) for r in self.connect_list}
        return z, feats

    def prepare_chunk(self, frames: Tensor, *, stage: StageHook = _no_stage) -> Chunk:
        """All whole-chunk work for frames (T,3,S,S) RGB in [-1,1]; T >= 1.

        stage: entered around each stage ("encoders", "flow", "gains").
        """
        self._check_frames(frames)
        with stage("encoders"):
            z, feats = self.observe(frames)
        with stage("flow"):
            # backward flow of each consecutive pair: flows[k] lives on frame k+1's grid and points into frame k;
            # all pairs in one batch like the official call (GMFlow is sensitive enough that batching changes the
            # rounding; memory ~0.2 GB per 512² pair in fp32)
            flows = None if frames.shape[0] < 2 else self.flownet(frames[1:], frames[:-1])
        with stage("gains"):
            gains = self.kalman_filter(z)
        return Chunk(frames=frames, z_obs=z, feats=feats, flows=flows, gains=gains)

    # ---- recurrent stage -----------------------------------------------------------------------------------

    def initial_state(self) -> KeepState:
        return KeepState()

    def step(
        self,
        chunk: Chunk,
        state: KeepState,
        trace: dict[str, Tensor] | None = None,
        *,
        stage: StageHook = _no_stage,
        decoder: DecoderFn | None = None,
    ) -> tuple[Tensor, KeepState]:
        """Restore frame `state.t` of `chunk`; returns (output (1,3,S,S), next state).

        trace: receives the intermediate tensors (z_prime, z_hat, logits, idx, and cfa_<r> on the eager decoder)
        for tests. stage: entered around each stage ("warp", "encoders", "gains", "transformer", "decoder").
        decoder: this call's decode half (default: the one installed with `set_decoder`, else `decode_codes`).
        """
        t = state.t
        if not 0 <= t < chunk.length:
            raise InputError(f"KEEP.step: state.t={t} is outside the chunk of {chunk.length} frames; start from initial_state()")
        z_obs = chunk.z_obs[t : t + 1]
        if t == 0:
            z_hat = z_obs
        else:
            assert chunk.flows is not None and state.prev_out is not None
            with stage("warp"):
                warped = flow_warp(state.prev_out, chunk.flows[t - 1 : t])
            with stage("encoders"):
                z_prime, _ = self.hq_encoder(warped)
            with stage("gains"):
                z_hat = kalman_update(z_obs, z_prime, chunk.gains[t : t + 1])
            if trace is not None:
                trace["z_prime"] = z_prime
        with stage("transformer"):
            logits = self.code_logits(z_hat)
            idx = logits.argmax(dim=2)  # top-1 code per token (= the official argmax of the softmax)
        with stage("decoder"):
            feats = {r: chunk.feats[r][t : t + 1] for r in self.connect_list}
            memory = state.memory if t > 0 else None
            decoder = decoder or self.codebook_decoder
            if decoder is None:
                out, memory = self.decode_codes(idx, feats, memory, trace=trace)
            else:
                out, memory = decoder(idx, feats, memory)
        if trace is not None:
            trace.update(z_hat=z_hat, logits=logits, idx=idx)
        return out, KeepState(t=t + 1, prev_out=out, memory=memory)

    def decode_codes(
        self,
        idx: Tensor,
        feats: dict[int, Tensor],
        memory: dict[int, Tensor] | None,
        *,
        has_memory: Tensor | None = None,
        trace: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """The decode half of a step, a `DecoderFn`: codebook lookup of idx (B, L), generator with SFT fusion of
        `feats` and cross-frame attention (CFA) to `memory` (None at a chunk's first frame: CFA passes through).

        has_memory: graph mode for ONNX / TensorRT export, a (1,) tensor (1 = use memory, 0 = first frame): CFA is
        always computed and selected with an exact `where`, so one static graph serves every frame.
        Returns the raw output (B,3,S,S) and the new CFA memory per resolution.
        """
        quant = self.quantize.lookup(idx, self.latent_side)
        new_memory: dict[int, Tensor] = {}

        def fuse(res: int, y: Tensor) -> Tensor:
            if res in self.connect_list:
                y = self.fuse_convs_dict[str(res)](feats[res], y, 1)
            if res in self.cross_fuse_list:
                if has_memory is not None:
                    assert memory is not None
                    y = torch.where(has_memory > 0.5, self.cross_fuse[str(res)](y, memory[res]), y)
                elif memory is not None:
                    y = self.cross_fuse[str(res)](y, memory[res])
                    if trace is not None:
                        trace[f"cfa_{res}"] = y
                new_memory[res] = y
            return y

        return self.decode(quant, fuse), new_memory

    def forward(self, frames: Tensor) -> Tensor:
        """Restore one chunk: frames (T,3,S,S) RGB in [-1,1] -> raw outputs (T,3,S,S) (clamp before display)."""
        chunk = self.prepare_chunk(frames)
        state = self.initial_state()
        outs = []
        for _ in range(chunk.length):
            out, state = self.step(chunk, state)
            outs.append(out)
        return torch.cat(outs)

    def _check_frames(self, frames: Tensor) -> None:
        s = self.face_size
        if frames.ndim != 4 or frames.shape[1:] != (3, s, s) or frames.shape[0] < 1:
            raise InputError(f"KEEP.prepare_chunk: frames must be (T,3,{s},{s}) RGB in [-1,1], got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise InputError(f"KEEP.prepare_chunk: frames must be a float tensor in [-1,1], got {frames.dtype}")


# ---- registry protocol -------------------------------------------------------------------------------------------


def detect(sd: dict[str, Tensor]) -> bool:
    return all(k in sd for k in KEY_MARKERS)


#: KEEP v1.0.0 names (the authors' conversion renames `cross_fuse` -> `cfa`, `fuse_convs_dict` -> `cft`, under
#: `params_ema`) -> the v0.1.0 names our modules carry
V1_PREFIXES = {"cft.": "fuse_convs_dict.", "cfa.": "cross_fuse."}


def convert(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """v1.0.0 key names to ours; v0.1.0 files pass unchanged."""
    def rename(key: str) -> str:
        for old, new in V1_PREFIXES.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return {rename(k): v for k, v in sd.items()}


def keep_config_from_state_dict(sd: dict[str, Tensor]) -> KeepConfig:
    """KEEP hyperparameters from tensor shapes: among them the SFT fusion sizes (`fuse_convs_dict.*`: 16/32/64 in
    v0.1.0, 32/64/128/256 in the layout a port uses for KEEP_Asian) and the cross-frame sizes (`cross_fuse.*`, none
    or 16/32). The official temporal-regulariser list only collects training features: it has no tensors.

    Not derivable from a checkpoint (official values assumed): 8 gain-net heads and 4 cross-frame heads; the head
    width is the projection width divided by that count (official 384/8 = 48 and 1024/4 = 256).
    """
    core = core_config_from_state_dict(sd)
    kal_inner = int(sd["kalman_filter.uncertainty_estimator.0.attn1.to_q.weight"].shape[0])
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("kalman_filter.uncertainty_estimator."))
    cross = tuple(sorted({int(k.split(".")[1]) for k in sd if k.startswith("cross_fuse.")}))
    cross_inner = int(sd[f"cross_fuse.{cross[0]}.attn.to_q.weight"].shape[0]) if cross else 1024
    return KeepConfig(
        core=core,
        kalman_heads=8,
        kalman_head_dim=kal_inner // 8,
        kalman_layers=layers,
        cross_fuse=cross,
        cross_heads=4,
        cross_head_dim=cross_inner // 4,
        flow=gmflow_kwargs_from_state_dict(sd, "flownet.model."),
    )


def build(sd: dict[str, Tensor]) -> KEEP:
    return KEEP(config=keep_config_from_state_dict(sd))
