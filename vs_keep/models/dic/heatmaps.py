"""Landmark heatmap utilities: the 68->5 attention merge and heatmap->coordinate decoding.

The merge is part of the network's forward pass (it turns the previous step's landmark heatmaps into the
attention that weights the SR features), so it must match the official arithmetic closely: the fused maps
reach |values| of 1e4 with random weights and feed a softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import InputError

__all__ = ["COMPONENTS_68", "MIN_PEAK", "heatmaps_to_landmarks", "merge_heatmaps"]

#: 68-point (iBUG 300-W) index ranges summed into the five facial-component attention maps, in the order the
#: trained fusion block expects: left eye, right eye, nose, mouth, contour (jaw line and eyebrows).
COMPONENTS_68: tuple[tuple[int, int], ...] = ((36, 42), (42, 48), (27, 36), (48, 68), (0, 27))

#: Per-heatmap maxima below this are replaced by it before normalising, so flat or negative maps are not blown up.
MIN_PEAK = 0.05


def merge_heatmaps(heatmaps: Tensor) -> Tensor:
    """(B,68,h,w) raw heatmaps -> (B,5,h,w) component maps, each landmark map first divided by its own peak.

    A network with 5 keypoints is passed through (normalised only). Other counts are rejected when the model is
    built, so this function does not re-check them.
    """
    peak = heatmaps.amax(dim=(2, 3), keepdim=True).clamp_min(MIN_PEAK)
    normed = heatmaps / peak
    if normed.shape[1] == len(COMPONENTS_68):
        return normed
    return torch.stack([normed[:, a:b].sum(dim=1) for a, b in COMPONENTS_68], dim=1)


def heatmaps_to_landmarks(heatmaps: Tensor, out_size: int = 128, *, refine: bool = True) -> Tensor:
    """Decode (B,K,h,w) heatmaps to (B,K,2) float32 (x, y) coordinates in an `out_size` x `out_size` image.

    Convention (the one DIC's landmark targets were built with): a landmark at image position p is drawn as a
    Gaussian centred on heatmap cell p / s with s = out_size / h (4 for 128/32), where integer image coordinates
    are pixel centres. Decoding therefore maps cell (row i, column j) to (x, y) = (s*j, s*i) -- no half-pixel
    offset. Add 0.5 to get coordinates in a corner-origin (pixel centres at k+0.5) frame.

    The peak is the hard argmax of each map; with `refine` it is moved a quarter cell towards the larger of its
    two neighbours along each axis (the usual hourglass sub-cell refinement; cells on the border stay put).
    Hard argmax is used rather than a soft-argmax because DIC's heatmaps are not normalised probabilities.
    """
    if heatmaps.ndim != 4:
        raise InputError(f"heatmaps_to_landmarks: heatmaps must be (B,K,h,w), got shape {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    hm = heatmaps.detach().float()
    flat = hm.reshape(b, k, h * w).argmax(dim=-1)
    row = torch.div(flat, w, rounding_mode="floor")
    col = flat - row * w
    x = col.float()
    y = row.float()
    if refine:
        x = x + 0.25 * _neighbour_sign(hm, row, col, axis=1)
        y = y + 0.25 * _neighbour_sign(hm, row, col, axis=0)
    scale_x = out_size / w
    scale_y = out_size / h
    return torch.stack([x * scale_x, y * scale_y], dim=-1)


def _neighbour_sign(hm: Tensor, row: Tensor, col: Tensor, *, axis: int) -> Tensor:
    """sign(next - previous) around the peak along `axis` (0: rows, 1: columns); 0 where a neighbour is missing."""
    b, k, h, w = hm.shape
    length = h if axis == 0 else w
    pos = row if axis == 0 else col
    inside = (pos > 0) & (pos < length - 1)
    prev_pos = (pos - 1).clamp(0, length - 1)
    next_pos = (pos + 1).clamp(0, length - 1)

    def value(r: Tensor, c: Tensor) -> Tensor:
        return hm.reshape(b, k, h * w).gather(-1, (r * w + c).unsqueeze(-1)).squeeze(-1)

    if axis == 0:
        diff = value(next_pos, col) - value(prev_pos, col)
    else:
        diff = value(row, next_pos) - value(row, prev_pos)
    return torch.where(inside, torch.sign(diff), torch.zeros_like(diff))
