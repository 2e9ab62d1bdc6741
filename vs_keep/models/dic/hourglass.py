"""DIC's feedback hourglass: 68-point landmark heatmaps at 1/4 resolution from each step's SR image.

Half of the hourglass output channels become heatmap features, the other half is the recurrent state fed back
(concatenated with the fresh image features) at the next step. There is no batch norm in this variant.
Module attribute names follow the official checkpoint keys (`HG.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bottleneck", "FeedbackHourglass", "Hourglass", "PointwiseReLU"]


class Bottleneck(nn.Module):
    """1x1 -> ReLU -> 3x3 -> 1x1 residual unit (note: no activation after the 3x3), optional 1x1 skip projection."""

    def __init__(self, *, channels_in: int, channels_out: int) -> None:
        super().__init__()
        mid = channels_out // 2
        self.conv_block = nn.Sequential(
            nn.Conv2d(channels_in, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.Conv2d(mid, channels_out, 1),
        )
        self.skip_layer = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.skip_layer is None else self.skip_layer(x)
        return shortcut + self.conv_block(x)


class PointwiseReLU(nn.Module):
    """1x1 conv + ReLU (named to match the official `Lin` layout: `conv_block.0`)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_block(x)


class Hourglass(nn.Module):
    """Recursive-in-spirit, iterative-in-code hourglass of `depth` levels.

    Level n (depth..1) has `res{n}_1` on the skip branch, `res{n}_2` after 2x max pooling and `res{n}_3` before
    the 2x bilinear upsampling (align_corners=True, as trained); `res_center` sits at the bottom.
    """

    def __init__(self, *, depth: int, channels: int) -> None:
        super().__init__()
        self.depth = depth
        for n in range(depth, 0, -1):
            for part in (1, 2, 3):
                self.add_module(f"res{n}_{part}", Bottleneck(channels_in=channels, channels_out=channels))
        self.res_center = Bottleneck(channels_in=channels, channels_out=channels)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for n in range(self.depth, 0, -1):
            skips.append(getattr(self, f"res{n}_1")(x))
            x = getattr(self, f"res{n}_2")(F.max_pool2d(x, 2, 2))
        x = self.res_center(x)
        for n in range(1, self.depth + 1):
            x = getattr(self, f"res{n}_3")(x)
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) + skips.pop()
        return x


class FeedbackHourglass(nn.Module):
    """Image (B,3,S,S) + previous hidden state -> heatmaps (B,K,S/4,S/4) and the next hidden state."""

    def __init__(self, *, num_features: int, num_keypoints: int, depth: int = 4) -> None:
        super().__init__()
        f = num_features
        self.num_features = f
        self.pre_conv_block = nn.Sequential(
            nn.Conv2d(3, f // 4, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            Bottleneck(channels_in=f // 4, channels_out=f // 2),
            nn.MaxPool2d(2, 2),
            Bottleneck(channels_in=f // 2, channels_out=f // 2),
            Bottleneck(channels_in=f // 2, channels_out=f),
        )
        self.compress_in = nn.Conv2d(2 * f, 2 * f, 1)
        self.hg = Hourglass(depth=depth, channels=2 * f)
        self.hg_conv_out = nn.Sequential(
            Bottleneck(channels_in=f, channels_out=f),
            PointwiseReLU(channels=f),
            nn.Conv2d(f, num_keypoints, 1),
        )

    def forward(self, image: Tensor, hidden: Tensor | None) -> tuple[Tensor, Tensor]:
        feature = self.pre_conv_block(image)
        # At the first step there is no state yet: the image features stand in for it.
        state = feature if hidden is None else hidden
        out = self.hg(self.compress_in(torch.cat((feature, state), dim=1)))
        heatmaps = self.hg_conv_out(out[:, : self.num_features])
        return heatmaps, out[:, self.num_features :]
