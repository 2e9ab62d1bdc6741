"""Checkpoint layouts of DIC: the official one (our key names) and mmagic's `DICNet` renaming.

mmagic stores the generator under `generator.` inside `state_dict` (the loader has already removed the
`state_dict` wrapper); DICGAN files also hold `discriminator.*` tensors, which inference does not need.
The renaming is one-to-one (296 tensors, identical shapes); this module maps mmagic names back to ours.
"""

from __future__ import annotations

import re

import torch

__all__ = [
    "MMAGIC", "MMAGIC_MARKERS", "MMAGIC_PREFIX", "OFFICIAL", "OFFICIAL_MARKERS", "StateDict", "convert_mmagic",
    "layout_of", "mmagic_hourglass_depth", "mmagic_to_official",
]

StateDict = dict[str, torch.Tensor]

OFFICIAL = "official"
MMAGIC = "mmagic"
MMAGIC_PREFIX = "generator."

#: Keys every official-layout DIC checkpoint has.
OFFICIAL_MARKERS = (
    "conv_in.0.weight",
    "first_block.compress_in.0.weight",
    "block.fusion_block.conv_in.0.weight",
    "HG.compress_in.weight",
    "conv_out.0.weight",
)
#: The same tensors under mmagic's names (without the `generator.` prefix).
MMAGIC_MARKERS = (
    "conv_first.0.weight",
    "first_block.conv_first.0.weight",
    "block.fusion_block.conv_first.0.weight",
    "hour_glass.first_conv.weight",
    "conv_last.2.weight",
)

# Renames inside the two feedback blocks, mmagic -> official.
_BLOCK_PARTS = {
    "conv_first": "compress_in",
    "up_blocks": "upBlocks",
    "down_blocks": "downBlocks",
    "lr_blocks": "uptranBlocks",
    "hr_blocks": "downtranBlocks",
    "conv_last": "compress_out",
}
_HG_BRANCH = {"up1": "1", "low1": "2", "low3": "3"}


def layout_of(sd: StateDict) -> str | None:
    """'official', 'mmagic' (prefixed or bare mmagic names) or None when the keys are not DIC's."""
    if all(k in sd for k in OFFICIAL_MARKERS):
        return OFFICIAL
    if all(MMAGIC_PREFIX + k in sd for k in MMAGIC_MARKERS) or all(k in sd for k in MMAGIC_MARKERS):
        return MMAGIC
    return None


def mmagic_to_official(key: str, hg_depth: int) -> str:
    """One mmagic `DICNet` key (without `generator.`) -> the official key. Unknown keys are returned unchanged."""
    head, _, rest = key.partition(".")
    if head == "conv_first":
        return "conv_in." + rest
    if head == "conv_last":  # reconstruction: deconv, PReLU, conv
        index, _, param = rest.partition(".")
        return {"0": "out.0.", "1": "out.1.", "2": "conv_out.0."}.get(index, head + ".") + param
    if head in ("first_block", "block"):
        part, _, tail = rest.partition(".")
        if part == "fusion_block":
            sub, _, tail2 = tail.partition(".")
            sub = {"conv_first": "conv_in", "body": "resnet"}.get(sub, sub)
            return f"{head}.fusion_block.{sub}.{tail2}"
        return f"{head}.{_BLOCK_PARTS.get(part, part)}.{tail}"
    if head == "hour_glass":
        return "HG." + _hourglass_key(rest, hg_depth)
    return key


def _hourglass_key(rest: str, depth: int) -> str:
    if rest.startswith("first_conv."):
        return "compress_in." + rest[len("first_conv."):]
    if rest.startswith("last."):
        index, _, param = rest[len("last."):].partition(".")
        # mmagic flattens the official Lin(conv, ReLU) into last.1/last.2, so the final conv moves to last.3.
        return {"0": "hg_conv_out.0.", "1": "hg_conv_out.1.conv_block.0.", "3": "hg_conv_out.2."}.get(index, "last." + index + ".") + param
    if rest.startswith("hg."):
        # Nested `low2.` levels -> the official flat `res{level}_{branch}` names; the innermost low2 is the centre.
        m = re.fullmatch(r"hg\.((?:low2\.)*)(up1|low1|low3|low2)\.(.+)", rest)
        if m:
            nesting = m.group(1).count("low2.")
            if m.group(2) == "low2" and nesting == depth - 1:
                return "hg.res_center." + m.group(3)
            if m.group(2) != "low2":
                return f"hg.res{depth - nesting}_{_HG_BRANCH[m.group(2)]}.{m.group(3)}"
    return rest


def mmagic_hourglass_depth(keys: list[str]) -> int:
    """Hourglass depth from the deepest `low2.` nesting (the centre block is `low2` repeated depth times)."""
    deepest = 0
    for k in keys:
        m = re.match(r"(?:generator\.)?hour_glass\.hg\.((?:low2\.)+)", k)
        if m:
            deepest = max(deepest, m.group(1).count("low2."))
    return deepest


def convert_mmagic(sd: StateDict) -> StateDict:
    """mmagic state dict -> official names; drops the discriminator/loss tensors a GAN checkpoint carries."""
    prefixed = any(k.startswith(MMAGIC_PREFIX) for k in sd)
    if prefixed:
        items = {k[len(MMAGIC_PREFIX):]: v for k, v in sd.items() if k.startswith(MMAGIC_PREFIX)}
    else:
        items = dict(sd)
    depth = mmagic_hourglass_depth(list(items))
    return {mmagic_to_official(k, depth): v for k, v in items.items()}
