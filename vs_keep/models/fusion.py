"""Feature fusion in the generator: SFT (encoder features modulate the decoder) and KEEP's cross-frame attention."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import Attention, FeedForward
from .vqgan import ResBlock

__all__ = ["CrossFrameAttention", "SFTFusion", "from_tokens", "to_tokens"]


def _conv_lrelu_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, padding=1)
    )


class SFTFusion(nn.Module):
    """`dec + w·(dec·scale(e) + shift(e))` with `e = ResBlock(cat[enc, dec])` (keys `fuse_convs_dict.S.*`)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(in_channels=2 * channels, out_channels=channels)
        self.scale = _conv_lrelu_conv(channels)
        self.shift = _conv_lrelu_conv(channels)

    def forward(self, enc: Tensor, dec: Tensor, w: float = 1.0) -> Tensor:
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(e) + self.shift(e))


def to_tokens(x: Tensor) -> Tensor:
    """(B,C,H,W) -> (B,H·W,C), row-major token order."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: Tensor, h: int, w: int) -> Tensor:
    """(B,H·W,C) -> (B,C,H,W) as a channels_last-strided view, the layout of the official einops
    `b (h w) c -> b c h w`.

    Why the layout matters: the generator blocks after the cross-frame attention pick their convolution and norm
    kernels from it (channels_last vs NCHW), and the two round differently; with the official layout our fp32
    frames after the first are bit-identical to the official ones on the same machine. `view` on the contiguous
    tokens (not `transpose().reshape()`, which leaves a batch stride torch does not read as channels_last).
    """
    b, _, c = t.shape
    return t.contiguous().view(b, h, w, c).permute(0, 3, 1, 2)


class CrossFrameAttention(nn.Module):
    """KEEP's cross-frame fusion (`cross_fuse.S.*`): the current frame attends to the previous frame's features.

    Post-norm on the branch outputs; keys/values are the stored memory as is (no norm), 4 heads.
    """

    def __init__(self, *, channels: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.attn = Attention(dim=channels, heads=heads, head_dim=head_dim)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = FeedForward(dim=channels, inner=4 * channels)

    def forward(self, cur: Tensor, mem: Tensor) -> Tensor:
        h, w = cur.shape[-2:]
        c = to_tokens(cur)
        c = self.norm1(self.attn(c, to_tokens(mem))) + c
        c = self.norm2(self.ff(c)) + c
        return from_tokens(c, h, w)
