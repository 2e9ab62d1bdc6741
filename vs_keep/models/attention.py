"""Token attention and GEGLU feed-forward with the diffusers-0.11 parameter layout KEEP's checkpoint uses.

Keys: `to_q`, `to_k`, `to_v` (no bias), `to_out.0` (with bias); feed-forward `net.0.proj` (GEGLU) and `net.2`.
The math is the plain one of diffusers 0.11 (scaled q·kᵀ in one fused op, softmax over keys, no upcasting),
because later attention kernels differ from it at the ulp level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "FeedForward", "GEGLU"]


class Attention(nn.Module):
    """Multi-head attention of queries `xq` (B,Lq,D) over keys/values from `xkv` (B,Lk,D)."""

    def __init__(self, *, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim, self.scale = heads, head_dim, head_dim**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def _split(self, x: Tensor) -> Tensor:  # (B,L,h*d) -> (B*h, L, d); heads are contiguous channel blocks
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3).reshape(b * self.heads, n, self.head_dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Projected q (B,Lq,inner), k/v (B,Lk,inner) -> output (B,Lq,D)."""
        b, n, _ = q.shape
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        scores = torch.baddbmm(
            torch.empty(qh.shape[0], n, kh.shape[1], dtype=q.dtype, device=q.device), qh, kh.transpose(1, 2), beta=0, alpha=self.scale
        )
        out = torch.bmm(scores.softmax(dim=-1), vh)
        out = out.reshape(b, self.heads, n, self.head_dim).permute(0, 2, 1, 3).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[0](out)

    def forward(self, xq: Tensor, xkv: Tensor | None = None) -> Tensor:
        xkv = xq if xkv is None else xkv
        return self.attend(self.to_q(xq), self.to_k(xkv), self.to_v(xkv))


class GEGLU(nn.Module):
    """Linear to 2·inner, then value·GELU(gate): the FIRST half is the value, the second the gate (exact erf GELU)."""

    def __init__(self, *, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, dim -> 4·dim -> dim (`net.0.proj`, `net.2`; index 1 is a no-op dropout)."""

    def __init__(self, *, dim: int, inner: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim=dim, inner=inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))
