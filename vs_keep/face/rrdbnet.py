"""RRDBNet (ESRGAN / Real-ESRGAN generator) with BasicSR's state-dict key names, for the optional background
upsampler (RealESRGAN_x2plus). basicsr is not a dependency, so the network is written here; its size is read from
the checkpoint's tensor shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

__all__ = ["DenseBlock", "RRDB", "RRDBNet", "build_rrdbnet"]


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all previous outputs; residual scaled by 0.2."""

    def __init__(self, *, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Three dense blocks with an outer residual scaled by 0.2."""

    def __init__(self, *, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb2 = DenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb3 = DenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """(B,3,H,W) in [0,1] -> (B,3,scale*H,scale*W). Scales 1 and 2 first fold pixels into channels (pixel
    unshuffle by 4/scale), then two nearest x2 upsampling stages follow; H and W must be multiples of 4/scale."""

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 2, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise CheckpointError(f"RRDBNet: scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        fold = {1: 16, 2: 4, 4: 1}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * fold, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale < 4:
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def build_rrdbnet(sd: dict[str, torch.Tensor]) -> RRDBNet:
    """RRDBNet sized from a state dict's shapes (num_feat, num_block, num_grow_ch, channels, scale)."""
    try:
        first = sd["conv_first.weight"]
        num_feat, folded = int(first.shape[0]), int(first.shape[1])
        num_out = int(sd["conv_last.weight"].shape[0])
        num_grow = int(sd["body.0.rdb1.conv1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"not an RRDBNet (Real-ESRGAN) state dict: key {exc} is missing") from None
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.split(".")[1].isdigit()}
    scale = {48: 1, 12: 2, 3: 4}.get(folded)  # RGB input folded 16x / 4x / not at all
    if scale is None:
        raise CheckpointError(f"RRDBNet: conv_first takes {folded} channels; expected 3, 12 or 48 (scale 4, 2, 1)")
    return RRDBNet(num_in_ch=3, num_out_ch=num_out, scale=scale, num_feat=num_feat, num_block=len(blocks), num_grow_ch=num_grow)
