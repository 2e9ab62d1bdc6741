"""DIC (Ma et al., CVPR 2020): 16x16 -> 128x128 face SR, iterating between an SR branch and a landmark branch.

Per step: a feedback block of dense up/down back-projection groups produces 32x32 features; a 4x deconvolution
and a 3x3 conv give a residual added to a bilinear x8 upsample of the input; the feedback hourglass estimates
68 landmark heatmaps on that SR image. From step 1 on, the feedback block also takes its own previous output
and fuses five facial-component attention maps (merged from the previous heatmaps) into its features.

Attribute names follow the official checkpoint keys so official files load without renaming.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from ..info import ModelInfo
from .heatmaps import merge_heatmaps
from .hourglass import FeedbackHourglass

__all__ = ["NUM_STEPS", "AttentiveFusion", "DICNet", "FeedbackBlock", "GroupedResBlock", "conv_prelu", "deconv_prelu"]

#: PReLU slope at construction; every slope is overwritten by the checkpoint.
_PRELU_INIT = 0.2
#: The number of recurrent steps is not stored in a checkpoint; every released model uses 4.
NUM_STEPS = 4


def conv_prelu(channels_in: int, channels_out: int, kernel: int, *, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    """Conv + single-slope PReLU (`.0` / `.1`, the official ConvBlock layout). Default padding keeps the size."""
    pad = (kernel - 1) // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=pad), nn.PReLU(init=_PRELU_INIT))


def deconv_prelu(channels_in: int, channels_out: int, kernel: int, *, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(channels_in, channels_out, kernel, stride=stride, padding=padding), nn.PReLU(init=_PRELU_INIT)
    )


class GroupedResBlock(nn.Module):
    """conv3x3 (grouped) -> LeakyReLU(0.2) -> conv3x3 (grouped), added to the input: one branch per component."""

    def __init__(self, *, channels: int, mid_channels: int, groups: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(channels, mid_channels, 3, padding=1, groups=groups),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(mid_channels, channels, 3, padding=1, groups=groups),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res(x)


class AttentiveFusion(nn.Module):
    """Expand features into one branch per facial component, refine them, and blend by softmax attention.

    The softmax runs over the component axis of the merged heatmaps; torch's softmax subtracts the maximum
    first, which matters because the merged maps reach |values| of 1e4 and a naive exp would overflow.
    """

    def __init__(self, *, num_features: int, num_heatmaps: int, num_blocks: int, mid_channels: int) -> None:
        super().__init__()
        self.num_heatmaps = num_heatmaps
        wide = num_features * num_heatmaps
        self.conv_in = nn.Sequential(nn.Conv2d(num_features, wide, 1), nn.LeakyReLU(0.2, inplace=True))
        self.resnet = nn.Sequential(
            *(GroupedResBlock(channels=wide, mid_channels=mid_channels, groups=num_heatmaps) for _ in range(num_blocks))
        )

    def forward(self, feature: Tensor, attention_logits: Tensor) -> Tensor:
        b, _, h, w = feature.shape
        branches = self.resnet(self.conv_in(feature)).view(b, self.num_heatmaps, -1, h, w)
        weights = torch.softmax(attention_logits, dim=1).unsqueeze(2)
        return (branches * weights).sum(dim=1)


class FeedbackBlock(nn.Module):
    """Dense up/down back-projection groups (SRFBN style) on 32x32 features.

    Group i upsamples (deconv, stride = kernel - 4, padding 2: 32 -> 256) the 1x1-compressed concatenation of
    every low-resolution map so far, then downsamples the compressed concatenation of every high-resolution map
    so far. The outputs of all groups are compressed back to `num_features` channels.
    With `fusion` (the recurrent block of steps 1..N-1), the block input is concatenated with the previous step's
    output and the attentive fusion runs right after the input compression.
    """

    def __init__(self, *, num_features: int, num_groups: int, kernel: int, fusion: AttentiveFusion | None = None) -> None:
        super().__init__()
        f = num_features
        stride, padding = kernel - 4, 2
        self.num_groups = num_groups
        self.compress_in = conv_prelu(f if fusion is None else 2 * f, f, 1)
        self.upBlocks = nn.ModuleList(deconv_prelu(f, f, kernel, stride=stride, padding=padding) for _ in range(num_groups))
        self.downBlocks = nn.ModuleList(conv_prelu(f, f, kernel, stride=stride, padding=padding) for _ in range(num_groups))
        self.uptranBlocks = nn.ModuleList(conv_prelu(f * (i + 1), f, 1) for i in range(1, num_groups))
        self.downtranBlocks = nn.ModuleList(conv_prelu(f * (i + 1), f, 1) for i in range(1, num_groups))
        self.compress_out = conv_prelu(num_groups * f, f, 1)
        self.fusion_block = fusion

    def forward(self, x: Tensor, hidden: Tensor | None = None, attention_logits: Tensor | None = None) -> Tensor:
        if hidden is not None:
            x = torch.cat((x, hidden), dim=1)
        x = self.compress_in(x)
        if self.fusion_block is not None:
            assert attention_logits is not None
            x = self.fusion_block(x, attention_logits)
        low = [x]
        high: list[Tensor] = []
        for i in range(self.num_groups):
            lr_in = low[0] if i == 0 else self.uptranBlocks[i - 1](torch.cat(low, dim=1))
            high.append(self.upBlocks[i](lr_in))
            hr_in = high[0] if i == 0 else self.downtranBlocks[i - 1](torch.cat(high, dim=1))
            low.append(self.downBlocks[i](hr_in))
        return self.compress_out(torch.cat(low[1:], dim=1))


class DICNet(nn.Module):
    """The DIC generator. `forward(x)` with x (B,3,16,16) RGB in [0,1] -> (sr_list, heatmap_list), one per step.

    `input_mean` (RGB, in [0,1] units) is subtracted from the input and added back to every SR output, and
    `skip_size` fixes the size of the bilinear skip path: both reproduce mmagic's pipeline for mmagic weights.
    With the defaults (None) the forward equals the official network's `net(x)` exactly.
    """

    info = ModelInfo("dic", recurrent=False, takes_fidelity=False, scale=8)

    def __init__(
        self,
        *,
        num_features: int = 48,
        num_groups: int = 6,
        bp_kernel: int = 12,
        num_heatmaps: int = 5,
        num_fusion_blocks: int = 7,
        fusion_mid_channels: int = 240,
        hg_features: int = 256,
        num_keypoints: int = 68,
        hg_depth: int = 4,
        input_mean: Sequence[float] | None = None,
        skip_size: tuple[int, int] | None = None,
        layout: str = "official",
    ) -> None:
        super().__init__()
        f = num_features
        self.scale = 8  # pixel shuffle x2, then the x4 reconstruction deconvolution
        self.input_size = 16  # trained LR size (16 -> 128)
        self.num_steps = NUM_STEPS
        self.num_keypoints = num_keypoints
        self.layout = layout
        self.input_mean = tuple(float(m) for m in input_mean) if input_mean is not None else None
        self.skip_size = skip_size
        # Spatial sizes must survive the hourglass: SR/4 is pooled hg_depth times.
        self._size_multiple = 2 ** max(hg_depth - 1, 0)

        self.conv_in = conv_prelu(3, 4 * f, 3)
        self.first_block = FeedbackBlock(num_features=f, num_groups=num_groups, kernel=bp_kernel)
        fusion = AttentiveFusion(
            num_features=f, num_heatmaps=num_heatmaps, num_blocks=num_fusion_blocks, mid_channels=fusion_mid_channels
        )
        self.block = FeedbackBlock(num_features=f, num_groups=num_groups, kernel=bp_kernel, fusion=fusion)
        self.out = deconv_prelu(f, f, 8, stride=4, padding=2)
        self.conv_out = nn.Sequential(nn.Conv2d(f, 3, 3, padding=1))
        self.HG = FeedbackHourglass(num_features=hg_features, num_keypoints=num_keypoints, depth=hg_depth)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"DICNet: x must be (B,3,H,W) RGB, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.skip_size is not None and (h * self.scale, w * self.scale) != tuple(self.skip_size):
            raise InputError(
                f"DICNet: this mmagic DIC checkpoint upsamples to a fixed {self.skip_size[0]}x{self.skip_size[1]}; "
                f"input must be {self.skip_size[0] // self.scale}x{self.skip_size[1] // self.scale}, got {h}x{w}"
            )
        m = self._size_multiple
        if h % m or w % m or h < m or w < m:
            raise InputError(f"DICNet: x height/width must be multiples of {m} (trained on 16x16), got {h}x{w}")

    def forward(self, x: Tensor, *, return_attention: bool = False) -> tuple[list[Tensor], ...]:
        """Run all steps. With `return_attention`, also return the merged 5-map attention logits of steps 1..N-1."""
        self._check_input(x)
        x = x.to(self.conv_in[0].weight.dtype)  # a module loaded in bf16/fp16 still accepts float32 frames
        mean = None
        if self.input_mean is not None:
            mean = torch.tensor(self.input_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = x - mean
        if self.skip_size is not None:
            skip = F.interpolate(x, size=self.skip_size, mode="bilinear", align_corners=False)
        else:
            skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        lr_features = F.pixel_shuffle(self.conv_in(x), 2)

        sr_list: list[Tensor] = []
        heatmap_list: list[Tensor] = []
        attention_list: list[Tensor] = []
        sr_hidden: Tensor | None = None
        hg_hidden: Tensor | None = None
        heatmaps: Tensor | None = None
        for step in range(self.num_steps):
            if step == 0:
                features = self.first_block(lr_features)
            else:
                assert heatmaps is not None
                attention = merge_heatmaps(heatmaps)
                attention_list.append(attention)
                features = self.block(lr_features, sr_hidden, attention)
            sr_hidden = features
            sr = skip + self.conv_out(self.out(features))
            heatmaps, hg_hidden = self.HG(sr, hg_hidden)
            sr_list.append(sr if mean is None else sr + mean)
            heatmap_list.append(heatmaps)
        if return_attention:
            return sr_list, heatmap_list, attention_list
        return sr_list, heatmap_list
