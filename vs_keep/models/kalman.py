"""KEEP's Kalman gain network (`kalman_filter.*`) and the two Kalman equations.

The gain for every frame of a chunk comes from the chunk's LQ latents (the observations): three transformer
blocks (sparse-causal spatial attention to the chunk's first and the previous frame, GEGLU feed-forward, temporal
attention over ALL frames of the chunk), then three ResBlocks, a 1x1 conv and a sigmoid. The temporal attention is
non-causal and has no positional code, so gains need the whole chunk: they cannot be computed frame by frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import Attention, FeedForward
from .vqgan import ResBlock

__all__ = ["KalmanGainNet", "UncertaintyBlock", "kalman_update"]


class UncertaintyBlock(nn.Module):
    """One `uncertainty_estimator.i` block on tokens H (T frames, N tokens, C); pre-norm residuals (a), (b), (c)."""

    def __init__(self, *, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim=dim, heads=heads, head_dim=head_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim=dim, inner=4 * dim)
        self.norm3 = nn.LayerNorm(dim)
        self.attn_temp = Attention(dim=dim, heads=heads, head_dim=head_dim)
        self.norm_temp = nn.LayerNorm(dim)

    def forward(self, h: Tensor) -> Tensor:
        t = h.shape[0]
        # (a) sparse-causal attention: frame t queries [frame 0 of the chunk, frame max(t-1, 0)], from LN'd tokens
        n1 = self.norm1(h)
        a = self.attn1
        k_all, v_all = a.to_k(n1), a.to_v(n1)
        prev = torch.clamp(torch.arange(t, device=h.device) - 1, min=0)
        first = torch.zeros_like(prev)
        k = torch.cat([k_all[first], k_all[prev]], dim=1)
        v = torch.cat([v_all[first], v_all[prev]], dim=1)
        h = a.attend(a.to_q(n1), k, v) + h
        # (b) GEGLU feed-forward
        h = self.ff(self.norm3(h)) + h
        # (c) temporal attention: per spatial token, every frame attends to every frame (no mask, no position)
        s = h.transpose(0, 1)  # (N tokens, T, C)
        s = self.attn_temp(self.norm_temp(s)) + s
        return s.transpose(0, 1)


class KalmanGainNet(nn.Module):
    """Observations z (T,C,h,w) of one chunk -> gains (T,1,h,w) in (0,1). Keys under `kalman_filter.`."""

    def __init__(self, *, dim: int, heads: int, head_dim: int, layers: int) -> None:
        super().__init__()
        self.uncertainty_estimator = nn.ModuleList(
            [UncertaintyBlock(dim=dim, heads=heads, head_dim=head_dim) for _ in range(layers)]
        )
        self.kalman_gain_calculator = nn.Sequential(
            ResBlock(in_channels=dim), ResBlock(in_channels=dim), ResBlock(in_channels=dim), nn.Conv2d(dim, 1, 1), nn.Sigmoid()
        )

    def forward(self, z: Tensor) -> Tensor:
        t, c, hh, ww = z.shape
        tokens = z.flatten(2).transpose(1, 2)  # (T, h·w, C)
        for block in self.uncertainty_estimator:
            tokens = block(tokens)
        x = tokens.transpose(1, 2).reshape(t, c, hh, ww)
        return self.kalman_gain_calculator(x)


def kalman_update(z_obs: Tensor, z_pred: Tensor, gain: Tensor) -> Tensor:
    """Posterior latent `(1-g)·z_obs + g·z_pred` (this exact form: the rearranged one differs by ulps)."""
    return (1 - gain) * z_obs + gain * z_pred
