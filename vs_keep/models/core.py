"""The CodeFormer core shared by CodeFormer and KEEP (479 identical keys).

VQGAN encoder -> codebook-lookup transformer (predicts a code index per latent token) -> codebook -> generator,
with SFT fusion of encoder features into the generator at a few resolutions. KEEP and CodeFormer subclass this and
differ only in what they feed the transformer and what they do at the generator's fusion points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fusion import SFTFusion
from .vqgan import Codebook, Encoder, Generator, VQGANConfig

__all__ = ["CodeTransformerCore", "CoreConfig", "TransformerSALayer", "adain", "core_config_from_state_dict"]


class TransformerSALayer(nn.Module):
    """Pre-norm self-attention layer; the positional embedding is added to queries and keys, not values."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:  # x: (L, B, D), pos: (L, 1, D)
        y = self.norm1(x)
        qk = y + pos
        x = x + self.self_attn(qk, qk, y, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


@dataclass(frozen=True)
class CoreConfig:
    vqgan: VQGANConfig = VQGANConfig()
    codebook_size: int = 1024
    dim_embd: int = 512
    n_head: int = 8
    n_layers: int = 9
    dim_mlp: int = 1024
    connect_list: tuple[int, ...] = (32, 64, 128, 256)


class CodeTransformerCore(nn.Module):
    """Shared modules with the official attribute names: encoder, quantize, generator, position_emb, feat_emb,
    ft_layers, idx_pred_layer, fuse_convs_dict."""

    def __init__(self, *, config: CoreConfig) -> None:
        super().__init__()
        c, v = config, config.vqgan
        self.config = config
        self.face_size = v.img_size
        self.latent_side = v.latent_side
        self.encoder = Encoder(config=v)
        self.quantize = Codebook(n_codes=c.codebook_size, emb_dim=v.emb_dim)
        self.generator = Generator(config=v)
        self.position_emb = nn.Parameter(torch.zeros(v.latent_side**2, c.dim_embd))
        self.feat_emb = nn.Linear(v.emb_dim, c.dim_embd)
        self.ft_layers = nn.ModuleList(
            [TransformerSALayer(dim=c.dim_embd, heads=c.n_head, mlp_dim=c.dim_mlp) for _ in range(c.n_layers)]
        )
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(c.dim_embd), nn.Linear(c.dim_embd, c.codebook_size, bias=False))
        channels = {r: v.nf * m for r, m in zip((v.img_size // 2**i for i in range(len(v.ch_mult))), v.ch_mult)}
        self.fuse_convs_dict = nn.ModuleDict({str(r): SFTFusion(channels=channels[r]) for r in c.connect_list})
        self.connect_list = tuple(c.connect_list)
        #: resolutions after whose generator block `decode` calls `fuse`; KEEP adds its cross-frame sizes
        self.fusion_sizes = self.connect_list

    # ---- stages --------------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        """Images (B,3,S,S) in [-1,1] -> latent (B,emb,s,s) and encoder features at the fusion resolutions."""
        return self.encoder(x, taps=self.connect_list)

    def code_logits(self, z: Tensor) -> Tensor:
        """Latent (B,emb,s,s) -> codebook logits (B, s·s, n_codes), token order row-major."""
        tokens = self.feat_emb(z.flatten(2).permute(2, 0, 1))  # (L, B, D)
        pos = self.position_emb.unsqueeze(1)
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        return self.idx_pred_layer(tokens).permute(1, 0, 2)

    def lookup(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Top-1 code per token (argmax of the logits, = the official argmax of their softmax) and its features."""
        idx = logits.argmax(dim=2)
        return idx, self.quantize.lookup(idx, self.latent_side)

    def decode(self, quant: Tensor, fuse: Callable[[int, Tensor], Tensor]) -> Tensor:
        """Run the generator from code features; `fuse(resolution, y)` is applied after the fusion block of each
        resolution in `fusion_sizes`."""
        taps = {self.generator.tap_blocks[r]: r for r in self.fusion_sizes}
        y = quant
        for i, block in enumerate(self.generator.blocks):
            y = block(y)
            if i in taps:
                y = fuse(taps[i], y)
        return y


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Give `content` the per-channel mean/std of `style` (unbiased variance + eps, as CodeFormer's inference)."""

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.flatten(2)
        return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


def core_config_from_state_dict(sd: dict[str, Tensor]) -> CoreConfig:
    """Hyperparameters of the shared core from tensor shapes.

    Not stored in a checkpoint: the number of attention heads; we use dim/64 (official: 512/64 = 8 heads).
    """
    from .vqgan import vqgan_config_from_state_dict

    tokens, dim = sd["position_emb"].shape
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("ft_layers."))
    return CoreConfig(
        vqgan=vqgan_config_from_state_dict(sd, latent_tokens=int(tokens)),
        codebook_size=int(sd["quantize.embedding.weight"].shape[0]),
        dim_embd=int(dim),
        n_head=max(1, int(dim) // 64),
        n_layers=n_layers,
        dim_mlp=int(sd["ft_layers.0.linear1.weight"].shape[0]),
        connect_list=tuple(sorted(int(k.split(".")[1]) for k in sd if k.startswith("fuse_convs_dict.") and k.endswith("encode_enc.conv1.weight"))),
    )
