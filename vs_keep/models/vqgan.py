"""VQGAN building blocks shared by CodeFormer and KEEP: encoder, generator (decoder) and the codebook.

Block lists are `nn.ModuleList`s named `blocks` so the state-dict keys match the official checkpoints
(`encoder.blocks.N.*`, `generator.blocks.N.*`). Normalisation is GroupNorm(32 groups, eps 1e-6), activation swish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttnBlock", "Codebook", "Downsample", "Encoder", "GN_EPS", "GN_GROUPS", "Generator", "ResBlock", "Upsample",
    "VQGANConfig", "group_norm", "swish", "vqgan_config_from_state_dict",
]

GN_GROUPS = 32
GN_EPS = 1e-6


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GN_GROUPS, channels, eps=GN_EPS, affine=True)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResBlock(nn.Module):
    """Pre-activation residual block; a 1x1 `conv_out` shortcut appears only when the width changes."""

    def __init__(self, *, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        shortcut = x if self.conv_out is None else self.conv_out(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all positions, 1x1-conv projections, scale C^-0.5."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)  # (b, L, c)
        k = self.k(y).reshape(b, c, h * w)  # (b, c, L)
        v = self.v(y).reshape(b, c, h * w)
        scores = torch.bmm(q, k) * (int(c) ** -0.5)  # (b, Lq, Lk); same op order as the official block
        probs = torch.softmax(scores, dim=2)
        out = torch.bmm(v, probs.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after asymmetric zero padding (right/bottom), as the VQGAN encoder does."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class VQGANConfig:
    """Hyperparameters of the VQGAN backbone. Official KEEP/CodeFormer: 512, 64, (1,2,2,4,4,8), 2, (16,), 256."""

    img_size: int = 512
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    emb_dim: int = 256

    @property
    def latent_side(self) -> int:
        return self.img_size // 2 ** (len(self.ch_mult) - 1)


class Encoder(nn.Module):
    """Image (B,3,S,S) -> latent (B,emb_dim,S/2^(L-1),...). `taps()` names the per-resolution feature blocks."""

    def __init__(self, *, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        blocks: list[nn.Module] = [nn.Conv2d(3, c.nf, 3, padding=1)]
        self.tap_blocks: dict[int, int] = {}  # resolution -> index of the last ResBlock of that level
        res = c.img_size
        in_mult = (1,) + tuple(c.ch_mult)
        block_out = c.nf
        for level, mult in enumerate(c.ch_mult):
            block_in, block_out = c.nf * in_mult[level], c.nf * mult
            for _ in range(c.res_blocks):
                blocks.append(ResBlock(in_channels=block_in, out_channels=block_out))
                self.tap_blocks[res] = len(blocks) - 1
                block_in = block_out
                if res in c.attn_resolutions:
                    blocks.append(AttnBlock(channels=block_in))
            if level != len(c.ch_mult) - 1:
                blocks.append(Downsample(channels=block_in))
                res //= 2
        blocks += [
            ResBlock(in_channels=block_out),
            AttnBlock(channels=block_out),
            ResBlock(in_channels=block_out),
            group_norm(block_out),
            nn.Conv2d(block_out, c.emb_dim, 3, padding=1),
        ]
        self.blocks = nn.ModuleList(blocks)  # note: no activation between the final GroupNorm and conv

    def forward(self, x: Tensor, taps: tuple[int, ...] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        """Return the latent and the features after the tap blocks of the requested resolutions."""
        want = {self.tap_blocks[r]: r for r in taps}
        feats: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in want:
                feats[want[i]] = x
        return x, feats


class Generator(nn.Module):
    """Latent (B,emb_dim,s,s) -> image. `tap_blocks` maps a resolution to the block after which fusion runs."""

    def __init__(self, *, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        block_in = c.nf * c.ch_mult[-1]
        res = c.latent_side
        blocks: list[nn.Module] = [
            nn.Conv2d(c.emb_dim, block_in, 3, padding=1),
            ResBlock(in_channels=block_in),
            AttnBlock(channels=block_in),
            ResBlock(in_channels=block_in),
        ]
        self.tap_blocks: dict[int, int] = {}
        for level in reversed(range(len(c.ch_mult))):
            block_out = c.nf * c.ch_mult[level]
            for j in range(c.res_blocks):
                blocks.append(ResBlock(in_channels=block_in, out_channels=block_out))
                block_in = block_out
                # Official fusion points: the last ResBlock at the latent resolution, the first one elsewhere.
                if (res == c.latent_side) or j == 0:
                    self.tap_blocks[res] = len(blocks) - 1
                if res in c.attn_resolutions:
                    blocks.append(AttnBlock(channels=block_in))
            if level != 0:
                blocks.append(Upsample(channels=block_in))
                res *= 2
        blocks += [group_norm(block_in), nn.Conv2d(block_in, 3, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)  # no activation between the final GroupNorm and conv


class Codebook(nn.Module):
    """Nearest-neighbour codebook (`quantize.embedding.weight`, (n_codes, emb_dim)); inference only looks codes up."""

    def __init__(self, *, n_codes: int, emb_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_codes, emb_dim)

    def lookup(self, indices: Tensor, side: int) -> Tensor:
        """Indices (B, side*side) in row-major token order -> features (B, emb_dim, side, side)."""
        b = indices.shape[0]
        feat = self.embedding.weight[indices.reshape(-1)]
        return feat.reshape(b, side, side, -1).permute(0, 3, 1, 2).contiguous()


# ---- hyperparameters from a state dict -------------------------------------------------------------------------


def _block_kinds(sd: dict[str, Tensor], prefix: str) -> list[tuple[str, Tensor | None]]:
    """Classify `prefix.N` blocks as conv/norm/res/attn/resample from their keys, in index order."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    n = 1 + max((int(m.group(1)) for k in sd if (m := pat.match(k))), default=-1)
    kinds: list[tuple[str, Tensor | None]] = []
    for i in range(n):
        p = f"{prefix}{i}."
        if p + "conv1.weight" in sd:
            kinds.append(("res", sd[p + "conv1.weight"]))
        elif p + "q.weight" in sd:
            kinds.append(("attn", None))
        elif p + "conv.weight" in sd:
            kinds.append(("resample", None))
        elif p + "weight" in sd and sd[p + "weight"].ndim == 4:
            kinds.append(("conv", sd[p + "weight"]))
        elif p + "weight" in sd:
            kinds.append(("norm", None))
        else:
            raise KeyError(f"cannot classify block {p}*")
    return kinds


def vqgan_config_from_state_dict(sd: dict[str, Tensor], *, latent_tokens: int, prefix: str = "encoder.blocks.") -> VQGANConfig:
    """Read nf, ch_mult, res_blocks, attention resolutions and emb_dim from the encoder's tensor shapes."""
    kinds = _block_kinds(sd, prefix)
    first, last = kinds[0][1], kinds[-1][1]
    if kinds[0][0] != "conv" or kinds[-1][0] != "conv" or first is None or last is None:
        raise KeyError(f"{prefix}: expected a conv at both ends of the encoder")
    nf, emb_dim = int(first.shape[0]), int(last.shape[0])
    body = kinds[1:-5]  # drop conv_in and mid (res, attn, res), norm, conv_out
    levels: list[list[tuple[str, Tensor | None]]] = [[]]
    for kind in body:
        if kind[0] == "resample":
            levels.append([])
        else:
            levels[-1].append(kind)
    ch_mult = tuple(int(next(t for k, t in lv if k == "res").shape[0]) // nf for lv in levels)  # type: ignore[union-attr]
    res_blocks = sum(k == "res" for k, _ in levels[0])
    side = int(round(latent_tokens**0.5))
    if side * side != latent_tokens:
        raise ValueError(f"vqgan_config_from_state_dict: latent_tokens={latent_tokens} (position_emb rows) is not a square latent")
    img_size = side * 2 ** (len(ch_mult) - 1)
    attn = tuple(img_size // 2**i for i, lv in enumerate(levels) if any(k == "attn" for k, _ in lv))
    return VQGANConfig(img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks, attn_resolutions=attn, emb_dim=emb_dim)
