"""LPIPS (VGG variant, v0.1) from user-supplied weights; nothing is downloaded.

LPIPS needs two things: ImageNet VGG-16 convolution weights and five per-channel linear weights. Accepted
layouts, in any combination of files (merged in order):
- torchvision's VGG-16 state dict (`vgg16-397923af.pth`: keys `features.<i>.weight/bias`);
- a full LPIPS state dict (keys `net.slice<k>.<i>.weight/bias` plus `lin<k>.model.1.weight`);
- the `lpips` package's linear-layer file (`weights/v0.1/vgg.pth`: keys `lin<k>.model.1.weight`).
When no linear weights are given they are taken from an installed `lpips` package, and when no VGG weights are
given torchvision's cache (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`) is tried.

Computation: inputs scaled to [-1, 1], shifted/scaled by LPIPS's constants, VGG-16 activations after relu1_2,
relu2_2, relu3_3, relu4_3, relu5_3, each unit-normalised over channels; squared differences are weighted per
channel, averaged over space and summed over the five layers.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, WeightsNotFoundError

__all__ = ["HOW_TO_ENABLE", "Lpips", "TORCHVISION_VGG16_FILE", "load_lpips"]

log = logging.getLogger(__name__)

# VGG-16 `features` indices of the 13 convolutions, and the ReLU index after which LPIPS taps each stage.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_POOL_INDICES = (4, 9, 16, 23)
_TAP_AFTER = (3, 8, 15, 22, 29)
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"

_SLICE_KEY = re.compile(r"^(?:.*\.)?net\.slice\d\.(\d+)\.(weight|bias)$")
_FEAT_KEY = re.compile(r"^(?:.*\.)?features\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^(?:.*\.)?lins?\.?(\d)\.(?:model\.1\.)?weight$")

HOW_TO_ENABLE = (
    "pass --lpips-weights with torchvision's vgg16-397923af.pth (plus lpips' v0.1 vgg.pth unless the `lpips` "
    "package is installed), or a full LPIPS state dict"
)


def _read_state(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise WeightsNotFoundError(f"--lpips-weights {path}: file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"--lpips-weights {path}: not a readable torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"--lpips-weights {path}: expected a state dict, got {type(state).__name__}")
    return state


def _collect(states: list[dict]) -> tuple[dict, dict]:
    """Map any accepted layout onto {features index: (weight, bias)} and {tap: linear weight}."""
    conv: dict[int, dict[str, object]] = {}
    lin: dict[int, object] = {}
    for state in states:
        for key, value in state.items():
            m = _SLICE_KEY.match(key) or _FEAT_KEY.match(key)
            if m:
                conv.setdefault(int(m.group(1)), {})[m.group(2)] = value
                continue
            m = _LIN_KEY.match(key)
            if m:
                lin[int(m.group(1))] = value
    return conv, lin


def _default_lin_file() -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    return path if path.is_file() else None


def _default_vgg_file() -> Path | None:
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_VGG16_FILE
    return path if path.is_file() else None


class Lpips:
    """LPIPS-VGG distance of two RGB uint8 frames (lower is more similar)."""

    def __init__(self, files: list[str | Path], *, device: str = "cpu", discover: bool = True) -> None:
        import torch

        states = [_read_state(Path(f)) for f in files]
        conv, lin = _collect(states)
        if discover:  # what the given files lack, from torchvision's cache and the lpips package (given files win)
            found = [_default_vgg_file() if not all(i in conv for i in _CONV_INDICES) else None,
                     _default_lin_file() if len(lin) < 5 else None]
            conv, lin = _collect([_read_state(f) for f in found if f is not None] + states)
        missing = [i for i in _CONV_INDICES if i not in conv or set(conv[i]) != {"weight", "bias"}]
        if missing:
            raise CheckpointError(f"--lpips-weights: VGG-16 convolution weights missing (features {missing}); "
                                  + HOW_TO_ENABLE)
        if sorted(lin) != [0, 1, 2, 3, 4]:
            raise CheckpointError(
                f"--lpips-weights: LPIPS linear layers missing (have {sorted(lin)}); " + HOW_TO_ENABLE
            )
        self.device = torch.device(device)
        self._conv = {i: (conv[i]["weight"].float().to(self.device), conv[i]["bias"].float().to(self.device))
                      for i in _CONV_INDICES}
        self._lin = [lin[k].float().reshape(1, -1, 1, 1).to(self.device) for k in range(5)]
        for k, (w, c) in enumerate(zip(self._lin, _CHANNELS)):
            if w.shape[1] != c:
                raise CheckpointError(f"--lpips-weights: linear layer {k} has {w.shape[1]} channels, expected {c}")
        self._shift = torch.tensor(_SHIFT, device=self.device).view(1, 3, 1, 1)
        self._scale = torch.tensor(_SCALE, device=self.device).view(1, 3, 1, 1)

    def _features(self, x):
        import torch.nn.functional as F

        taps = []
        for i in range(_TAP_AFTER[-1] + 1):
            if i in self._conv:
                w, b = self._conv[i]
                x = F.conv2d(x, w, b, padding=1)
            elif i in _POOL_INDICES:
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(x)
            if i in _TAP_AFTER:
                taps.append(x)
        return taps

    def __call__(self, ref: np.ndarray, out: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.stack([ref, out])).to(self.device).permute(0, 3, 1, 2).float()
            x = (batch / 127.5 - 1.0 - self._shift) / self._scale
            total = 0.0
            for feat, w in zip(self._features(x), self._lin):
                feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                diff = (feat[0:1] - feat[1:2]).pow(2)
                total += float((diff * w).sum(dim=1).mean())
            return total


def load_lpips(files: list[str | Path] | None, *, device: str = "cpu") -> tuple[Lpips | None, str]:
    """An Lpips instance, or None and a one-line reason. Explicitly given files that fail raise instead."""
    if files:
        return Lpips(files, device=device), ""
    if _default_vgg_file() is not None and _default_lin_file() is not None:
        return Lpips([], device=device), ""
    return None, f"LPIPS skipped: no weights; {HOW_TO_ENABLE}"
