"""DIC face super-resolution (16x16 -> 128x128 with 68 landmarks): registry hooks `detect`, `convert`, `build`.

Official checkpoints (`{'state_dict': ...}`, `{'netG': ...}` or flat; 296 tensors) load as they are. mmagic
checkpoints (`generator.`-prefixed `DICNet` names) are renamed, and the built module then reproduces mmagic's
pipeline: input minus the RGB mean [129.795, 108.12, 96.39]/255 (added back to every SR output) and a
fixed 128x128 skip upsampling.

Note: the official training code applies the same mean shift ((0.509, 0.424, 0.378), in its datasets, and
removes it from the outputs in its solver), outside the network. `module(x)` for an official file stays the
bare network, bit-compatible with the official `net(x)`; set `module.input_mean = TRAINING_MEAN` to run it the
way it was trained.
"""

from __future__ import annotations

import re

from torch import nn

from ...errors import CheckpointError
from .heatmaps import COMPONENTS_68, heatmaps_to_landmarks, merge_heatmaps
from .keys import MMAGIC, OFFICIAL, StateDict, convert_mmagic, layout_of
from .network import DICNet

__all__ = [
    "DICNet",
    "KEY_MARKERS",
    "TRAINING_MEAN",
    "COMPONENTS_68",
    "build",
    "convert",
    "detect",
    "heatmaps_to_landmarks",
    "merge_heatmaps",
]

#: two official-layout keys, then the same tensors in mmagic's layout (names the closest family in load errors)
KEY_MARKERS = ("first_block.compress_in.0.weight", "HG.compress_in.weight", "generator.first_block.conv_first.0.weight",
               "generator.hour_glass.first_conv.weight")
#: RGB mean (in [0,1] units) both the official code and mmagic subtract from the input during training.
TRAINING_MEAN = (129.795 / 255.0, 108.12 / 255.0, 96.39 / 255.0)
#: mmagic's skip path is `interpolate(size=(128,128))` rather than `scale_factor=8`.
MMAGIC_SKIP_SIZE = (128, 128)


class ConvertedStateDict(dict):
    """A state dict in our (official) names that remembers the layout it was converted from."""

    source_layout: str = OFFICIAL


def detect(sd: StateDict) -> bool:
    return layout_of(sd) is not None


def convert(sd: StateDict) -> ConvertedStateDict:
    layout = layout_of(sd)
    out = ConvertedStateDict(convert_mmagic(sd) if layout == MMAGIC else sd)
    out.source_layout = layout or OFFICIAL
    return out


def _count(sd: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(1 for k in sd if rx.fullmatch(k))


def build(sd: StateDict) -> nn.Module:
    """Construct DICNet with hyperparameters read from tensor shapes (num_steps, not stored, is `NUM_STEPS`)."""
    layout = getattr(sd, "source_layout", OFFICIAL)
    conv_in = sd["conv_in.0.weight"]
    num_features = sd["first_block.compress_in.0.weight"].shape[0]
    num_groups = _count(sd, r"first_block\.upBlocks\.\d+\.0\.weight")
    bp_kernel = sd["first_block.upBlocks.0.0.weight"].shape[-1]
    fusion_in = sd["block.fusion_block.conv_in.0.weight"]
    num_heatmaps = fusion_in.shape[0] // num_features
    num_fusion_blocks = _count(sd, r"block\.fusion_block\.resnet\.\d+\.res\.0\.weight")
    fusion_mid = sd["block.fusion_block.resnet.0.res.0.weight"].shape[0] if num_fusion_blocks else num_heatmaps * num_features
    hg_features = sd["HG.compress_in.weight"].shape[0] // 2
    num_keypoints = sd["HG.hg_conv_out.2.weight"].shape[0]
    hg_depth = _count(sd, r"HG\.hg\.res\d+_1\.conv_block\.0\.weight")
    out_kernel = sd["out.0.weight"].shape[-1]

    problems = []
    if conv_in.shape[1] != 3 or sd["conv_out.0.weight"].shape[0] != 3:
        problems.append(f"{conv_in.shape[1]} input / {sd['conv_out.0.weight'].shape[0]} output channels (RGB has 3)")
    if conv_in.shape[0] != 4 * num_features:
        problems.append(f"conv_in has {conv_in.shape[0]} channels, expected 4 x {num_features}")
    if bp_kernel <= 4 or num_groups < 1:
        problems.append(f"back-projection kernel {bp_kernel} / {num_groups} groups")
    if num_keypoints != 68 and num_keypoints != num_heatmaps:
        problems.append(f"{num_keypoints} landmarks (only 68-point heatmaps can be merged into {num_heatmaps} components)")
    if num_keypoints == 68 and num_heatmaps != len(COMPONENTS_68):
        problems.append(f"{num_heatmaps} attention maps, expected {len(COMPONENTS_68)}")
    if out_kernel != 8:
        problems.append(f"reconstruction deconvolution kernel {out_kernel} (only the x8 model, kernel 8, exists)")
    if hg_depth < 1:
        problems.append("no hourglass levels")
    if problems:
        raise CheckpointError("unsupported DIC variant: " + "; ".join(problems))

    mmagic = layout == MMAGIC
    return DICNet(
        num_features=num_features,
        num_groups=num_groups,
        bp_kernel=bp_kernel,
        num_heatmaps=num_heatmaps,
        num_fusion_blocks=num_fusion_blocks,
        fusion_mid_channels=fusion_mid,
        hg_features=hg_features,
        num_keypoints=num_keypoints,
        hg_depth=hg_depth,
        input_mean=TRAINING_MEAN if mmagic else None,
        skip_size=MMAGIC_SKIP_SIZE if mmagic else None,
        layout=layout,
    )
