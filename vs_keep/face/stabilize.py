"""Low-band temporal stabilizer for one track's restored aligned faces (`stabilize=s`, after VideoGigaGAN).

Generative restorers trade temporal consistency for detail: what flickers in their output is mostly the low band
(tone, colour casts, shading of skin), while the high band carries the detail we want to keep. VideoGigaGAN
routes high frequencies around its temporally smoothed path ("high-frequency shuttle"); here the same split is
fixed processing around any restorer (KEEP or CodeFormer):

- each restored aligned face y_i is reduced to a work size (128 px) and low-passed (Gaussian, σ = 8 px at 512);
- the low bands of the `window` previous faces of the same run are warped onto face i by optical flow (OpenCV
  DIS on the band-pass grey images, so the flicker itself does not bias the flow; flows between consecutive
  faces, composed), each weighted by forward-backward consistency (occluded or mis-tracked pixels get 0);
- the weighted mean replaces face i's low band with strength s: y_i + s·(mean - low_i), upsampled. The high
  band is untouched, so detail (and Laplacian energy) stays.

Frame i depends only on faces max(0, i - window)..i of its run: a bounded window inside the chunk's run, so
random access stays exact. Runs are primed by at least `window` frames when the stabilizer is on (`history`), so
the window does not restart at chunk boundaries. Deterministic: fixed DIS preset, fixed arithmetic order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..evaluation.temporal import DisFlow, occlusion_mask, warp

__all__ = ["SIGMA", "WINDOW", "WORK", "LowBandStabilizer", "StabilizedRun", "check_stabilize", "history"]

#: previous faces averaged into each face's low band
WINDOW = 4
#: Gaussian σ of the low band, in pixels of a 512 face
SIGMA = 8.0
#: side of the work images for flow and low band (the correction is smooth: upsampling it loses nothing)
WORK = 128


def check_stabilize(strength: object) -> float:
    """`stabilize` as a validated strength in [0, 1]."""
    try:
        s = float(strength)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        s = float("nan")
    if isinstance(strength, bool) or not 0.0 <= s <= 1.0:
        raise InputError(f"stabilize must be a number in [0, 1] (0 = off), got {strength!r}")
    return s


def history(overlap: int, stabilize: float) -> int:
    """Frames a chunk's run starts before the chunk: `overlap`, and at least the stabilizer's window when it is
    on (so frame `start` is filtered over real history, like every other frame)."""
    return max(int(overlap), WINDOW if stabilize > 0 else 0)


def _band_gray(small: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 grey of the band above ~4σ: tone and shading flicker removed, structure kept (what DIS matches)."""
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    band = gray - cv2.GaussianBlur(gray, (0, 0), 4 * sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(128.0 + 255.0 * band), 0, 255).astype(np.uint8)


class LowBandStabilizer:
    """Stabilized faces of one run. source(i) -> restored face i of the run, (S, S, 3) float32 RGB in [0, 1].

    `frame(i)` reads faces max(0, i - window)..i; per-face work images and the flows between consecutive faces
    are cached, so a linear pass costs two small DIS flows per face. Thread-safe."""

    def __init__(self, source: Callable[[int], np.ndarray], strength: float) -> None:
        self.source, self.strength = source, check_stabilize(strength)
        self._small: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # i -> (low band, band-pass grey), work size
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # i -> (flow i -> i-1 on i's grid, weight on i's grid)
        self._lock = threading.Lock()

    def _work(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._small:
            face = self.source(i)
            small = cv2.resize(face, (WORK, WORK), interpolation=cv2.INTER_AREA)
            sigma = SIGMA * WORK / 512.0
            low = cv2.GaussianBlur(small, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            self._small[i] = (low, _band_gray(small, sigma))
        return self._small[i]

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Flow from face i's grid into face i-1 and its consistency weight (soft, 0 where fw/bw disagree)."""
        if i not in self._pairs:
            g1, g0 = self._work(i)[1], self._work(i - 1)[1]
            dis = DisFlow()
            fw, bw = dis(g1, g0), dis(g0, g1)
            weight = cv2.GaussianBlur(occlusion_mask(fw, bw).astype(np.float32), (0, 0), 1.0)
            self._pairs[i] = (fw, weight)
        return self._pairs[i]

    def correction(self, i: int) -> np.ndarray:
        """s·(filtered low band - own low band) of face i at work size, (work, work, 3) float32."""
        low_i = self._work(i)[0]
        acc, den = low_i.astype(np.float64), np.ones(low_i.shape[:2], np.float64)
        flow = np.zeros((WORK, WORK, 2), np.float32)  # face i's grid -> face j+1
        weight = np.ones((WORK, WORK), np.float32)
        for j in range(i - 1, max(0, i - WINDOW) - 1, -1):
            step, valid = self._pair(j + 1)
            flow = flow + warp(step, flow)  # compose: i -> j+1 -> j
            weight = weight * cv2.remap(valid, *_coords(flow), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            acc += weight[..., None] * warp(self._work(j)[0], flow)
            den += weight
        mean = (acc / den[..., None]).astype(np.float32)
        return self.strength * (mean - low_i)

    def frame(self, i: int) -> np.ndarray:
        """Stabilized face i, (S, S, 3) float32 RGB in [0, 1]."""
        face = self.source(i)
        if self.strength == 0.0 or i == 0:
            return face
        with self._lock:
            corr = self.correction(i)
            for j in [j for j in self._small if j < i - WINDOW]:  # a linear pass never needs them again
                del self._small[j]
                self._pairs.pop(j, None)
        size = face.shape[0]
        up = cv2.resize(corr, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.clip(face + up, 0.0, 1.0).astype(np.float32)


def _coords(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx + flow[..., 0], gy + flow[..., 1]


class StabilizedRun:
    """A `ClipRun` whose frames come out stabilized (same interface: `frame(k)` in model range, `steps`)."""

    def __init__(self, run, strength: float) -> None:
        self.run = run
        self.length = run.length
        self._stab = LowBandStabilizer(self._face, strength)

    def _face(self, i: int) -> np.ndarray:
        y = self.run.run_frame(i).detach().float().cpu().clamp(-1, 1)
        return np.ascontiguousarray(((y + 1) * 0.5).numpy().transpose(1, 2, 0), dtype=np.float32)

    @property
    def steps(self) -> int:
        return self.run.steps

    def frame(self, k: int) -> torch.Tensor:
        if not 0 <= k < self.length:
            raise IndexError(f"frame {k} outside the clip of {self.length}")
        face = self._stab.frame(self.run.prime + k)
        return torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1))) * 2.0 - 1.0
