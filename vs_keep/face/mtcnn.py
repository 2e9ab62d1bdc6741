"""MTCNN face detector (Zhang et al. 2016): P-Net proposals over an image pyramid, R-Net and O-Net refinement.

Why our own: the only face detector whose weights are MIT licensed, small (2 MB) and installable offline is the
MTCNN set inside the facenet-pytorch wheel, but that package pins an old torch. The three state dicts are vendored
in `data/` and loaded here into networks whose layer names match their keys.

Coordinates are continuous pixel-index coordinates (pixel centres at integers, like cv2). Crops are taken on whole
pixels with zero padding outside the image, so a face cut by the frame border is still seen at the right scale.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .boxes import nms, square_boxes
from .types import Detection

__all__ = ["MTCNN", "CropNet", "ONet", "PNet", "RNet", "load_nets", "weights_dir"]

_MEAN, _SCALE = 127.5, 0.0078125  # the networks were trained on (pixel - 127.5) / 128


class PNet(nn.Module):
    """Fully convolutional 12x12 proposal net: (B,3,H,W) -> box offsets (B,4,h,w), face prob (B,2,h,w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    """Flatten (B,C,H,W) in (W,H,C) order: the dense layers were converted from a framework storing images
    transposed and channels last, so their input columns follow that order."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class CropNet(nn.Module):
    """R-Net and O-Net: conv + PReLU (+ 2-stride max-pool) layers over a fixed-size crop, one dense + PReLU layer,
    then linear heads. Layer names (`conv1`, `prelu1`, `pool1`, ..., `dense4`, `dense5_1`, ...) match the
    state-dict keys. forward: (B,3,S,S) -> the heads after the first (box offsets[, landmarks]), face prob (B,2).

    convs: (in, out, kernel, pool kernel or 0) per conv layer; dense: (in, out); heads: output sizes, face
    logits first."""

    def __init__(self, convs: list[tuple[int, int, int, int]], dense: tuple[int, int], heads: tuple[int, ...]) -> None:
        super().__init__()
        for i, (cin, cout, kernel, pool) in enumerate(convs, 1):
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, kernel))
            self.add_module(f"prelu{i}", nn.PReLU(cout))
            if pool:
                self.add_module(f"pool{i}", nn.MaxPool2d(pool, 2, ceil_mode=True))
        n = len(convs) + 1
        self.add_module(f"dense{n}", nn.Linear(*dense))
        self.add_module(f"prelu{n}", nn.PReLU(dense[1]))
        self.trunk = list(self.children())
        self.heads = [nn.Linear(dense[1], size) for size in heads]
        for j, head in enumerate(self.heads, 1):
            self.add_module(f"dense{n + 1}_{j}", head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for layer in self.trunk:
            x = layer(_flatten_transposed(x) if isinstance(layer, nn.Linear) else x)
        logits, *rest = (head(x) for head in self.heads)
        return (*rest, torch.softmax(logits, dim=1))


def RNet() -> CropNet:
    """24x24 refinement net: (B,3,24,24) -> box offsets (B,4), face prob (B,2)."""
    return CropNet([(3, 28, 3, 3), (28, 48, 3, 3), (48, 64, 2, 0)], (576, 128), (2, 4))


def ONet() -> CropNet:
    """48x48 output net: (B,3,48,48) -> box offsets (B,4), landmarks (B,10: x0..x4, y0..y4), face prob (B,2)."""
    return CropNet([(3, 32, 3, 3), (32, 64, 3, 3), (64, 64, 3, 2), (64, 128, 2, 0)], (1152, 256), (2, 4, 10))


def weights_dir() -> Path:
    """Folder of the vendored MTCNN state dicts (package data)."""
    return Path(str(resources.files("vs_keep.face") / "data"))


def load_nets(device: str | torch.device = "cpu", folder: str | Path | None = None) -> tuple[PNet, CropNet, CropNet]:
    """Build the three networks and load the vendored (or `folder`'s) pnet/rnet/onet.pt strictly."""
    folder = Path(folder) if folder is not None else weights_dir()
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise CheckpointError(f"MTCNN weights {path} are missing; the vs-keep installation is incomplete (reinstall it)")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(sd, strict=True)
        except (RuntimeError, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: not a valid MTCNN {name} state dict: {str(exc).splitlines()[0]}") from None
        net.eval().requires_grad_(False).to(device)
    return nets


def _crop_resized(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square whole-pixel crops of `boxes` resized to size x size (area filter), zero padded outside the image.

    image: (H,W,3) float32 normalised. Returns (N,3,size,size) float32 and the integer boxes (N,4) the crops
    cover, which is what the networks' regressions are relative to.
    """
    h, w = image.shape[:2]
    ib = _integer_boxes(boxes)
    pad_value = (0.0 - _MEAN) * _SCALE
    out = np.empty((len(ib), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(ib):
        crop = np.full((y2 - y1, x2 - x1, 3), pad_value, np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            crop[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out.transpose(0, 3, 1, 2), ib.astype(np.float64)


def _integer_boxes(boxes: np.ndarray) -> np.ndarray:
    ib = np.round(boxes[:, :4]).astype(np.int64)
    ib[:, 2] = np.maximum(ib[:, 2], ib[:, 0] + 1)
    ib[:, 3] = np.maximum(ib[:, 3], ib[:, 1] + 1)
    return ib


def _crop_resized_tensor(image: torch.Tensor, boxes: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """`_crop_resized` for a normalised (3,H,W) tensor on its device: the padded crop's INTER_AREA resize is
    Wy @ crop @ Wx.T, and the zero-padded part contributes pad_value times its share of the weights."""
    from ..kernels.resize import area_matrix

    h, w = image.shape[1:]
    ib = _integer_boxes(boxes)
    pad_value = (0.0 - _MEAN) * _SCALE
    out = torch.empty((len(ib), 3, size, size), dtype=torch.float32, device=image.device)
    for k, (x1, y1, x2, y2) in enumerate(ib):
        ch, cw = int(y2 - y1), int(x2 - x1)
        down = size <= ch and size <= cw
        wy, wx = area_matrix(ch, size, down, image.device), area_matrix(cw, size, down, image.device)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            wy_in, wx_in = wy[:, sy1 - y1 : sy2 - y1], wx[:, sx1 - x1 : sx2 - x1]
            inside = wy_in @ image[:, sy1:sy2, sx1:sx2] @ wx_in.T
            out[k] = inside + pad_value * (1 - wy_in.sum(1)[:, None] * wx_in.sum(1)[None, :])
        else:
            out[k] = pad_value
    return out, ib.astype(np.float64)


def _apply_offsets(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Shift each box side by the regressed fraction of the box size."""
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    out = boxes.copy()
    out[:, 0:2] += reg[:, 0:2] * wh
    out[:, 2:4] += reg[:, 2:4] * wh
    return out


class MTCNN:
    """Detector with the classic cascade settings; `detect(rgb_uint8)` returns faces sorted by score.

    min_face_size: smallest face (box side, pixels) searched for; the pyramid starts at 12/min_face_size, so a
    larger value is much faster on big frames. thresholds: per-stage face probabilities. score_threshold: final
    filter (MTCNN's O-Net gives ~0.86 to some non-faces; 0.95 drops them).
    """

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        min_face_size: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        score_threshold: float = 0.95,
        weights: str | Path | None = None,
    ) -> None:
        if not min_face_size >= 12:
            raise InputError(f"MTCNN: min_face_size must be >= 12 pixels, got {min_face_size}")
        if not 0.1 < factor < 1.0:
            raise InputError(f"MTCNN: factor must be in (0.1, 1), got {factor}")
        self.device = torch.device(device)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.score_threshold = float(score_threshold)
        self.pnet, self.rnet, self.onet = load_nets(self.device, weights)

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: a face of min_face_size maps to P-Net's 12-pixel window at the first scale."""
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        out = []
        while side >= 12:
            out.append(m * self.factor ** len(out))
            side *= self.factor
        return out

    def _net(self, net: nn.Module, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, ...]:
        """Run a stage; only its small outputs (scores, offsets) come back to the CPU."""
        with torch.inference_mode():
            inp = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
            outs = net(inp.to(self.device))
        return tuple(o.float().cpu().numpy() for o in outs)

    def _propose(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Stage 1: (N,5) boxes x1,y1,x2,y2,score from P-Net over the pyramid (after NMS and regression).
        image: normalised (H,W,3) array (cv2 path) or (3,H,W) tensor (resized on its device)."""
        on_device = isinstance(image, torch.Tensor)
        h, w = image.shape[1:] if on_device else image.shape[:2]
        found = []
        for s in self.scales(h, w):
            hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
            if on_device:
                from ..kernels.resize import resize_area

                small = resize_area(image, hs, ws)[None]
            else:
                small = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None]
            reg, prob = self._net(self.pnet, small)
            iy, ix = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if len(iy) == 0:
                continue
            sx, sy = ws / w, hs / h  # exact per-axis scale of the resized image
            boxes = np.stack(
                [2 * ix / sx, 2 * iy / sy, (2 * ix + 12) / sx, (2 * iy + 12) / sy, prob[0, 1, iy, ix]], axis=1
            ).astype(np.float64)
            offsets = reg[0][:, iy, ix].T.astype(np.float64)
            keep = nms(boxes[:, :4], boxes[:, 4], 0.5)
            found.append(np.concatenate([boxes[keep], offsets[keep]], axis=1))
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _apply_offsets(cand[:, :4], cand[:, 5:9])
        return np.concatenate([square_boxes(boxes), cand[:, 4:5]], axis=1)

    #: `detect` takes (H,W,3) uint8 tensors too and keeps them on their device (see `detect_faces`)
    accepts_tensors = True

    def detect(self, image: np.ndarray | torch.Tensor) -> list[Detection]:
        """Faces in an (H,W,3) uint8 RGB image, best score first. A torch tensor (e.g. a frame already on the GPU)
        is normalised, resized and cropped on its device with cv2's INTER_AREA weights (`kernels.resize`)."""
        is_tensor = isinstance(image, torch.Tensor)
        if not (
            (isinstance(image, np.ndarray) or is_tensor)
            and image.ndim == 3 and image.shape[2] == 3 and image.dtype in (np.uint8, torch.uint8)
        ):
            got = f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            raise InputError(f"MTCNN.detect: image must be an HxWx3 uint8 RGB array, got {got}")
        if is_tensor:
            norm = ((image.to(self.device).permute(2, 0, 1).to(torch.float32) - _MEAN) * _SCALE).contiguous()
            crop = _crop_resized_tensor
        else:
            norm = (image.astype(np.float32) - _MEAN) * _SCALE
            crop = _crop_resized  # type: ignore[assignment]
        boxes = self._propose(norm)
        if len(boxes) == 0:
            return []
        # Stage 2: R-Net on 24x24 crops.
        crops, ib = crop(norm, boxes, 24)
        reg, prob = self._net(self.rnet, crops)
        keep = prob[:, 1] > self.thresholds[1]
        ib, reg, score = ib[keep], reg[keep], prob[keep, 1]
        if len(ib) == 0:
            return []
        order = nms(ib, score, 0.7)
        boxes = square_boxes(_apply_offsets(ib[order], reg[order].astype(np.float64)))
        # Stage 3: O-Net on 48x48 crops gives the final boxes and the five landmarks.
        crops, ib = crop(norm, boxes, 48)
        reg, pts, prob = self._net(self.onet, crops)
        keep = prob[:, 1] > self.thresholds[2]
        ib, reg, pts, score = ib[keep], reg[keep].astype(np.float64), pts[keep].astype(np.float64), prob[keep, 1]
        if len(ib) == 0:
            return []
        side = (ib[:, 2] - ib[:, 0])[:, None]
        lm = np.stack([ib[:, 0:1] + side * pts[:, :5], ib[:, 1:2] + side * pts[:, 5:]], axis=2)
        boxes = _apply_offsets(ib, reg)
        order = nms(boxes, score, 0.7, by_min_area=True)
        return [
            Detection(box=boxes[i], score=float(score[i]), landmarks=lm[i])
            for i in order
            if score[i] >= self.score_threshold
        ]
