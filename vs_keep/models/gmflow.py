"""GMFlow optical flow, single scale, exactly as KEEP uses it (clean-room, see GMFLOW-AND-GAIN-NET.md §1).

Why a faithful copy rather than any flow net: KEEP warps its previous output with this flow, and the synthetic-weight
golden fixture checks it to float rounding, so every op order that changes numerics (division by sqrt(C), post-norm,
the -100 shift mask, the K = k_proj(q_proj(F)) propagation quirk, zero-padded convex upsampling) follows the spec.

Stages (N pairs, H x W input, h = H/8, w = W/8, C = feature_channels):
  normalise -> CNN backbone (2N, C, h, w) -> + window-local sine code -> 6 Swin-style layers (2 x 2 windows,
  shifted on odd layers) -> global softmax matching (N, 2, h, w) -> global flow propagation -> x8 convex upsampling.
The module has parameters only (no buffers); positional codes, shift masks and coordinate grids are rebuilt per
size and kept in plain dicts.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..numerics import at_least_float32

__all__ = ["GMFlow", "gmflow_kwargs_from_state_dict"]

#: the backbone's output stride; KEEP's single-scale GMFlow always works at 1/8 resolution
_STRIDE = 8
#: fixed widths of the official CNN encoder stages and of the upsampler's hidden conv (not configurable upstream)
_BACKBONE_DIMS = (64, 96, 128)
_UPSAMPLER_HIDDEN = 256
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _instance_norm(x: Tensor) -> Tensor:
    """Non-affine InstanceNorm with instance statistics in train and eval (no keys, no running stats)."""
    return F.instance_norm(x, eps=1e-5)


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + IN + ReLU; a 1x1 conv (with bias) + IN shortcut when the shape changes."""

    def __init__(self, *, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            # indexed container so the key is `downsample.0.*` like the official checkpoint (its norm has no keys)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(_instance_norm(self.conv1(x)), inplace=True)
        y = F.relu(_instance_norm(self.conv2(y)), inplace=True)
        if self.downsample is not None:
            x = _instance_norm(self.downsample(x))
        return F.relu(x + y, inplace=True)


class _Backbone(nn.Module):
    """Stride-8 CNN: (B,3,H,W) normalised image -> (B,C,H/8,W/8) features (no norm after the last 1x1 conv)."""

    def __init__(self, *, out_channels: int) -> None:
        super().__init__()
        d1, d2, d3 = _BACKBONE_DIMS
        self.conv1 = nn.Conv2d(3, d1, 7, stride=2, padding=3, bias=False)
        self.layer1 = nn.Sequential(_ResidualBlock(cin=d1, cout=d1, stride=1), _ResidualBlock(cin=d1, cout=d1, stride=1))
        self.layer2 = nn.Sequential(_ResidualBlock(cin=d1, cout=d2, stride=2), _ResidualBlock(cin=d2, cout=d2, stride=1))
        self.layer3 = nn.Sequential(_ResidualBlock(cin=d2, cout=d3, stride=2), _ResidualBlock(cin=d3, cout=d3, stride=1))
        self.conv2 = nn.Conv2d(d3, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(_instance_norm(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv2(x)


def _split_windows(t: Tensor, h: int, w: int, splits: int) -> Tensor:
    """(B, h*w, C) -> (B*splits^2, (h/s)*(w/s), C); window order (batch, row-block, col-block), row-major inside."""
    b, _, c = t.shape
    t = t.view(b, splits, h // splits, splits, w // splits, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b * splits * splits, (h // splits) * (w // splits), c)


def _merge_windows(t: Tensor, b: int, h: int, w: int, splits: int) -> Tensor:
    """Inverse of `_split_windows`, returning (B, h, w, C)."""
    c = t.shape[-1]
    t = t.view(b, splits, splits, h // splits, w // splits, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h, w, c)


def _shift_mask(h: int, w: int, splits: int, device: torch.device) -> Tensor:
    """(splits^2, Lw, Lw) additive mask in rolled coordinates: 0 within a region, -100 across regions (float32)."""
    wh, ww = h // splits, w // splits
    sh, sw = wh // 2, ww // 2

    def labels(n: int, win: int, shift: int) -> Tensor:
        idx = torch.arange(n, device=device)
        lab = torch.zeros(n, dtype=torch.long, device=device)
        lab[idx >= n - win] = 1
        if shift > 0:
            lab[idx >= n - shift] = 2
        return lab

    region = (3 * labels(h, wh, sh)[:, None] + labels(w, ww, sw)[None, :]).to(torch.float32)
    win = _split_windows(region.view(1, h * w, 1), h, w, splits)[..., 0]  # (S^2, Lw)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0, device=device), torch.tensor(0.0, device=device))


def _window_attention(
    q: Tensor, k: Tensor, v: Tensor, *, h: int, w: int, splits: int, shift: bool, mask: Tensor | None
) -> Tensor:
    """Single-head attention inside splits x splits windows of the h x w grid, all windows as one batch.

    q, k, v: (B, h*w, C). With `shift`, the grid is rolled by half a window first and back afterwards, and the
    cross-region mask keeps wrapped-around tokens apart.
    """
    b, _, c = q.shape
    work = at_least_float32(q.dtype)
    if q.dtype != work:  # unscaled 128-dim dot products can overflow fp16
        return _window_attention(
            q.to(work), k.to(work), v.to(work), h=h, w=w, splits=splits, shift=shift, mask=mask
        ).to(q.dtype)
    sh, sw = (h // splits) // 2, (w // splits) // 2

    def prep(t: Tensor) -> Tensor:
        if shift:
            t = torch.roll(t.view(b, h, w, c), shifts=(-sh, -sw), dims=(1, 2)).reshape(b, h * w, c)
        return _split_windows(t, h, w, splits)

    qw, kw, vw = prep(q), prep(k), prep(v)
    # in-place ops below give the same values as the out-of-place spec form, with less peak memory
    scores = torch.matmul(qw, kw.transpose(1, 2)).div_(c**0.5)
    if shift and mask is not None:
        n, lw = mask.shape[0], mask.shape[1]
        # the same mask per window index for every batch entry; out of place because the TorchScript ONNX exporter
        # drops an in-place add on a view (same values, one more score buffer)
        scores = (scores.view(b, n, lw, lw) + mask).view(b * n, lw, lw)
    out = torch.matmul(torch.softmax(scores, dim=-1), vw)
    out = _merge_windows(out, b, h, w, splits)
    if shift:
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
    return out.reshape(b, h * w, c)


class _AttentionLayer(nn.Module):
    """Post-norm single-head window attention; the cross variant adds the [source || message] MLP."""

    def __init__(self, *, channels: int, ffn: bool, ffn_dim_expansion: int) -> None:
        super().__init__()
        c = channels
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.merge = nn.Linear(c, c, bias=False)
        self.norm1 = nn.LayerNorm(c)
        self.ffn = ffn
        if ffn:
            hidden = 2 * c * ffn_dim_expansion
            self.mlp = nn.Sequential(nn.Linear(2 * c, hidden, bias=False), nn.GELU(), nn.Linear(hidden, c, bias=False))
            self.norm2 = nn.LayerNorm(c)

    def forward(self, source: Tensor, target: Tensor, *, h: int, w: int, splits: int, shift: bool, mask: Tensor | None) -> Tensor:
        q, k, v = self.q_proj(source), self.k_proj(target), self.v_proj(target)
        msg = _window_attention(q, k, v, h=h, w=w, splits=splits, shift=shift, mask=mask)
        msg = self.norm1(self.merge(msg))
        if self.ffn:
            msg = self.norm2(self.mlp(torch.cat([source, msg], dim=-1)))
        return source + msg


class _TransformerBlock(nn.Module):
    def __init__(self, *, channels: int, ffn_dim_expansion: int) -> None:
        super().__init__()
        self.self_attn = _AttentionLayer(channels=channels, ffn=False, ffn_dim_expansion=ffn_dim_expansion)
        self.cross_attn_ffn = _AttentionLayer(channels=channels, ffn=True, ffn_dim_expansion=ffn_dim_expansion)


class _FeatureTransformer(nn.Module):
    """Self then cross attention per block; both images of a pair are one batch of 2N sequences."""

    def __init__(self, *, channels: int, num_layers: int, ffn_dim_expansion: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [_TransformerBlock(channels=channels, ffn_dim_expansion=ffn_dim_expansion) for _ in range(num_layers)]
        )

    def forward(self, f0: Tensor, f1: Tensor, *, splits: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """f0, f1: (N, C, h, w) -> transformed (N, C, h, w) each."""
        n, c, h, w = f0.shape
        x = torch.cat([f0.flatten(2).transpose(1, 2), f1.flatten(2).transpose(1, 2)], dim=0)  # (2N, L, C)
        y = torch.cat([x[n:], x[:n]], dim=0)
        for i, blk in enumerate(self.layers):
            shift = splits > 1 and i % 2 == 1
            kw = dict(h=h, w=w, splits=splits, shift=shift, mask=mask)
            x = blk.self_attn(x, x, **kw)
            # the cross target is the other image's output of the previous block (not this block's self-attn)
            x = blk.cross_attn_ffn(x, y, **kw)
            y = torch.cat([x[n:], x[:n]], dim=0)
        x = x.view(2 * n, h, w, c).permute(0, 3, 1, 2).contiguous()
        return x[:n], x[n:]


class _FlowPropagation(nn.Module):
    """Global self-attention that smooths the matched flow using img0's features (no value projection)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)

    def forward(self, feat0: Tensor, flow: Tensor) -> Tensor:
        """feat0 (N, C, h, w), flow (N, 2, h, w), both in the matching dtype (at least float32; the weights are cast
        to it, a no-op when the module has that dtype)."""
        b, c, h, w = feat0.shape
        dt = feat0.dtype
        query = F.linear(feat0.view(b, c, h * w).permute(0, 2, 1), self.q_proj.weight.to(dt), self.q_proj.bias.to(dt))
        # official quirk: keys are projected from the projected queries, not from the features
        key = F.linear(query, self.k_proj.weight.to(dt), self.k_proj.bias.to(dt))
        value = flow.view(b, flow.shape[1], h * w).permute(0, 2, 1)
        scores = torch.matmul(query, key.permute(0, 2, 1)).div_(c**0.5)
        out = torch.matmul(torch.softmax(scores, dim=-1), value)
        return out.view(b, h, w, flow.shape[1]).permute(0, 3, 1, 2)


class GMFlow(nn.Module):
    """Backward optical flow for KEEP: `forward(img_cur, img_prev)` -> (N, 2, H, W) pixels on img_cur's grid.

    Inputs are RGB in [-1, 1], (N, 3, H, W), H and W multiples of 8 * attn_splits (16 by default). Channel 0 is
    dx (+right), channel 1 dy (+down): content at (x, y) of img_cur is found at (x+dx, y+dy) of img_prev.
    Attention scores, matching and propagation are computed in at least float32 (`vs_keep.numerics`): float32 for a
    16-bit module, because 4096-way softmaxes and expected coordinates lose sub-pixel precision in 16-bit floats,
    and float64 for a float64 module (the exact reference). The flow has that dtype.
    """

    def __init__(
        self,
        *,
        feature_channels: int = 128,
        num_transformer_layers: int = 6,
        ffn_dim_expansion: int = 4,
        upsample_factor: int = 8,
        attn_splits: int = 2,
    ) -> None:
        super().__init__()
        if feature_channels <= 0 or feature_channels % 4:
            raise InputError(f"GMFlow: feature_channels must be a positive multiple of 4 (sine code), got {feature_channels}")
        if upsample_factor != _STRIDE:
            raise InputError(
                f"GMFlow: upsample_factor must be {_STRIDE} (the single-scale backbone's stride), got {upsample_factor}"
            )
        if attn_splits < 1:
            raise InputError(f"GMFlow: attn_splits must be >= 1, got {attn_splits}")
        self.feature_channels = feature_channels
        self.upsample_factor = upsample_factor
        self.attn_splits = attn_splits
        self.backbone = _Backbone(out_channels=feature_channels)
        self.transformer = _FeatureTransformer(
            channels=feature_channels, num_layers=num_transformer_layers, ffn_dim_expansion=ffn_dim_expansion
        )
        self.feature_flow_attn = _FlowPropagation(channels=feature_channels)
        self.upsampler = nn.Sequential(
            nn.Conv2d(2 + feature_channels, _UPSAMPLER_HIDDEN, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(_UPSAMPLER_HIDDEN, upsample_factor * upsample_factor * 9, 1),
        )
        # size-keyed caches; plain dicts so nothing ends up in state_dict() or moves with .to()
        self._pos_cache: dict[tuple, Tensor] = {}
        self._mask_cache: dict[tuple, Tensor] = {}

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return _STRIDE * self.attn_splits

    def _position(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(C, h, w) sine code of one (h/s, w/s) window, tiled s x s: y-half then x-half, sin/cos interleaved."""
        key = (h, w, str(device), dtype)
        pos = self._pos_cache.get(key)
        if pos is not None:
            return pos
        s = self.attn_splits
        wh, ww = h // s, w // s
        npf = self.feature_channels // 2
        ones = torch.ones(1, wh, ww, dtype=dtype, device=device)
        y_embed = ones.cumsum(1, dtype=dtype)
        x_embed = ones.cumsum(2, dtype=dtype)
        scale = 2 * math.pi
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * scale
        dim_t = torch.arange(npf, dtype=dtype, device=device)
        dim_t = 10000 ** (2 * (dim_t // 2) / npf)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)[0]  # (C, wh, ww)
        pos = pos.repeat(1, s, s).contiguous()
        self._pos_cache[key] = pos
        return pos

    def _mask(self, h: int, w: int, device: torch.device) -> Tensor | None:
        if self.attn_splits <= 1:
            return None
        key = (h, w, str(device))
        m = self._mask_cache.get(key)
        if m is None:
            m = self._mask_cache[key] = _shift_mask(h, w, self.attn_splits, device)
        return m

    def _check(self, img_cur: Tensor, img_prev: Tensor) -> None:
        for name, t in (("img_cur", img_cur), ("img_prev", img_prev)):
            if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != 3 or not t.is_floating_point():
                raise InputError(f"GMFlow: {name} must be a float tensor (N, 3, H, W) in [-1, 1], got {getattr(t, 'shape', type(t))}")
        if img_cur.shape != img_prev.shape:
            raise InputError(f"GMFlow: img_cur {tuple(img_cur.shape)} and img_prev {tuple(img_prev.shape)} differ in shape")
        n, _, hh, ww = img_cur.shape
        m = self.size_multiple
        if n == 0:
            raise InputError("GMFlow: got an empty batch (no frame pairs); a chunk needs at least 2 frames for flow")
        if hh % m or ww % m or hh == 0 or ww == 0:
            raise InputError(f"GMFlow: height and width must be positive multiples of {m}, got {hh}x{ww}; pad the frames")

    @staticmethod
    def _normalise(x: Tensor) -> Tensor:
        """[-1, 1] RGB -> ImageNet-normalised, with the official op chain (x+1)/2*255, /255, -mean, /std."""
        mean = torch.tensor(_IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x + 1) / 2 * 255
        return (x / 255.0 - mean) / std

    # ----------------------------------------------------------------------------------------------- stages
    def _global_match(self, f0: Tensor, f1: Tensor) -> Tensor:
        """Softmax over all img1 positions; flow = expected coordinate - own coordinate, (N, 2, h, w), 1/8 px."""
        b, c, h, w = f0.shape
        corr = torch.matmul(f0.view(b, c, -1).permute(0, 2, 1), f1.view(b, c, -1)).div_(c**0.5)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=f0.device), torch.arange(w, device=f0.device), indexing="ij"
        )
        grid = torch.stack((xs, ys), dim=0).to(f0.dtype)[None].repeat(b, 1, 1, 1)  # (N, 2, h, w)
        prob = torch.softmax(corr, dim=-1)
        corresp = torch.matmul(prob, grid.reshape(b, 2, -1).permute(0, 2, 1)).view(b, h, w, 2).permute(0, 3, 1, 2)
        return corresp - grid

    def _convex_upsample(self, flow: Tensor, feat0: Tensor) -> Tensor:
        """x8 upsampling: each output pixel is a softmax-weighted mix of the 3x3 zero-padded coarse neighbours."""
        b, fc, h, w = flow.shape
        f = self.upsample_factor
        mask = self.upsampler(torch.cat((flow.to(feat0.dtype), feat0), dim=1)).to(flow.dtype)
        mask = torch.softmax(mask.view(b, 1, 9, f, f, h, w), dim=2)
        up = F.unfold(f * flow, [3, 3], padding=1).view(b, fc, 9, 1, 1, h, w)
        up = torch.sum(mask * up, dim=2)  # (b, 2, f, f, h, w)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(b, fc, f * h, f * w)

    def forward(self, img_cur: Tensor, img_prev: Tensor) -> Tensor:
        """(N,3,H,W) frame t and frame t-1 in [-1,1] -> (N,2,H,W) flow from t into t-1, in pixels (float32, or
        float64 for a float64 module)."""
        self._check(img_cur, img_prev)
        n, _, hh, ww = img_cur.shape
        dtype = next(self.parameters()).dtype
        x = torch.cat([self._normalise(img_cur.to(dtype)), self._normalise(img_prev.to(dtype))], dim=0)
        feats = self.backbone(x)
        h, w = hh // _STRIDE, ww // _STRIDE
        work = at_least_float32(dtype)
        pos = self._position(h, w, feats.device, work).to(feats.dtype)
        f0, f1 = feats[:n] + pos, feats[n:] + pos
        f0, f1 = self.transformer(f0, f1, splits=self.attn_splits, mask=self._mask(h, w, feats.device))
        f0_work = f0.to(work)
        flow = self._global_match(f0_work, f1.to(work))
        flow = self.feature_flow_attn(f0_work, flow)
        return self._convex_upsample(flow, f0)


_LAYER_RE = re.compile(r"transformer\.layers\.(\d+)\.")


def gmflow_kwargs_from_state_dict(sd: dict[str, Tensor], prefix: str = "") -> dict[str, int]:
    """GMFlow constructor arguments read from tensor shapes under `prefix` (e.g. "flownet.model.").

    Derived: feature_channels (backbone.conv2 out), num_transformer_layers (highest layer index + 1),
    ffn_dim_expansion (mlp.0 out / in), upsample_factor (sqrt(upsampler.2 out / 9)).
    Not derivable: attn_splits (window split count has no weights), so KEEP's value 2 is returned.
    """
    try:
        feature_channels = int(sd[prefix + "backbone.conv2.weight"].shape[0])
        mlp0 = sd[prefix + "transformer.layers.0.cross_attn_ffn.mlp.0.weight"].shape
        up_out = int(sd[prefix + "upsampler.2.weight"].shape[0])
    except KeyError as e:
        raise InputError(f"gmflow_kwargs_from_state_dict: key {e.args[0]!r} missing; not a GMFlow state dict under prefix {prefix!r}") from None
    layers = {int(m.group(1)) for k in sd if k.startswith(prefix) and (m := _LAYER_RE.match(k[len(prefix):]))}
    factor = int(round(math.sqrt(up_out / 9)))
    return {
        "feature_channels": feature_channels,
        "num_transformer_layers": max(layers) + 1,
        "ffn_dim_expansion": int(mlp0[0]) // int(mlp0[1]),
        "upsample_factor": factor,
        "attn_splits": 2,  # not stored in the weights; KEEP's GMFlow config
    }
