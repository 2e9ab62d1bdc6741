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

    Why the layout matters: the generator blocks after the cross-frame attention (and, through the restored frame,
    the next frame's HQ encoder) pick their convolution and GroupNorm kernels from it, channels_last or NCHW, and
    the two round differently. With the official layout we run the official kernels: issue 14 measured all fp32
    frames bit-identical to the official code on the same machine. The price on CPU with torch 2.14: its
    channels_last GroupNorm and convolutions round coarser (one decode: 7.2e-5 relative to float64 instead of
    2.5e-6), so fp32 frames after the first sit ~7e-5 from the official fixture instead of ~6e-6 (tests/test_keep.py
    tolerances still hold). float64 is exact either way. `view` on the contiguous tokens, not
    `transpose().reshape()`: that leaves a batch stride torch does not read as channels_last.
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
