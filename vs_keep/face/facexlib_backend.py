"""RetinaFace detection and ParseNet face parsing through facexlib, with user-supplied weight files only.

facexlib downloads missing weights from GitHub when its `init_*` helpers are used; we never call those. The
weight file is located first (explicit path, else the vs-keep weights cache) and a missing file raises
WeightsNotFoundError naming it and the `vs-keep download` command, before any network is built.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..errors import InputError
from .types import Detection
from ..models.checkpoint import load_strict
from .weightfiles import find_weights, load_plain_state_dict

__all__ = ["PARSENET", "ParseNetMasker", "RETINAFACE", "RetinaFaceDetector"]

#: detector name -> (facexlib network name, vs-keep weights registry name, file name)
RETINAFACE = {
    "retinaface_resnet50": ("resnet50", "retinaface_resnet50", "detection_Resnet50_Final.pth"),
    "retinaface_mobilenet0.25": ("mobile0.25", "retinaface_mobilenet0.25", "detection_mobilenet0.25_Final.pth"),
}
RETINAFACE["retinaface_mobile0.25"] = RETINAFACE["retinaface_mobilenet0.25"]  # facexlib's spelling
PARSENET = ("parsenet", "parsing_parsenet.pth")

# ParseNet's 19 classes: background, neck (14), cloth (16), hair (17) and hat (18) are outside the face mask.
_FACE_CLASSES = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], np.float32)


def _require_facexlib(what: str) -> None:
    try:
        import facexlib  # noqa: F401
    except ImportError:
        raise InputError(f"{what} needs the optional 'facexlib' package: pip install 'vs-keep[facexlib]'") from None


class RetinaFaceDetector:
    """facexlib RetinaFace with the official KEEP settings (confidence 0.8, NMS 0.4, frames whose shorter side is
    below `resize` pixels are upscaled for detection)."""

    def __init__(
        self,
        *,
        name: str = "retinaface_resnet50",
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        conf_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        resize: int = 640,
    ) -> None:
        if name not in RETINAFACE:
            raise InputError(f"unknown RetinaFace variant {name!r}; use one of {', '.join(RETINAFACE)}")
        network, registry_name, filename = RETINAFACE[name]
        path = find_weights(weights, registry_name, filename)  # before importing or building anything
        _require_facexlib(name)
        from facexlib.detection.retinaface import RetinaFace

        self.device = torch.device(device)
        self.conf_threshold, self.nms_threshold, self.resize = float(conf_threshold), float(nms_threshold), int(resize)
        net = RetinaFace(network_name=network, half=False, device=self.device)
        load_strict(net, load_plain_state_dict(path), path, f"RetinaFace {network}")
        self.net = net.eval().requires_grad_(False).to(self.device)

    def detect(self, image: np.ndarray) -> list[Detection]:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise InputError(f"RetinaFaceDetector.detect: image must be an HxWx3 uint8 RGB array, got {getattr(image, 'shape', type(image))}")
        h, w = image.shape[:2]
        scale = max(1.0, self.resize / min(h, w)) if self.resize else 1.0
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if scale > 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        with torch.inference_mode():
            out = self.net.detect_faces(bgr, conf_threshold=self.conf_threshold, nms_threshold=self.nms_threshold, use_origin_size=True)
        out = np.asarray(out, np.float64).reshape(-1, 15)
        dets = [
            Detection(box=row[:4] / scale, score=float(row[4]), landmarks=row[5:15].reshape(5, 2) / scale)
            for row in out
            if np.all(np.isfinite(row))
        ]
        return sorted(dets, key=lambda d: -d.score)


class ParseNetMasker:
    """Face-parsing mask of a restored face (official paste-back refinement): classes other than background,
    neck, cloth, hair and hat are face; the hard mask is blurred twice (101x101, σ 11) and its 10-pixel border
    cleared (sizes for the 512-px network; scaled for smaller ones)."""

    def __init__(self, *, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        registry_name, filename = PARSENET
        path = find_weights(weights, registry_name, filename)
        _require_facexlib("ParseNet")
        from facexlib.parsing.parsenet import ParseNet

        self.device = torch.device(device)
        sd = load_plain_state_dict(path)
        # The released network works at 512 px; the input size is read from the encoder depth (one stride-2
        # block per doubling above 32 px) so smaller test networks load too.
        steps = {int(k.split(".")[1]) for k in sd if k.startswith("encoder.")}
        self.size = 32 * 2 ** max(max(steps, default=4), 0)
        net = ParseNet(in_size=self.size, out_size=self.size, parsing_ch=19)
        load_strict(net, sd, path, "ParseNet")
        self.net = net.eval().requires_grad_(False).to(self.device)

    def __call__(self, face: np.ndarray, exact: bool = False) -> np.ndarray:
        """(S, S) float32 mask in [0, 1] for a restored face (S, S, 3) float32 RGB in [0, 1]."""
        size, n = face.shape[0], self.size
        x = cv2.resize(face.astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR) if size != n else face
        if exact:  # the official code parses the uint8 face
            x = np.rint(np.clip(x, 0, 1) * 255) / 255
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float().to(self.device) * 2 - 1
        with torch.inference_mode():
            labels = self.net(t)[0].argmax(dim=1)[0].cpu().numpy()
        mask = _FACE_CLASSES[labels] * 255.0
        k, sigma, border = (101, 11, 10) if n == 512 else (int(101 * n / 512) | 1, 11 * n / 512, max(round(10 * n / 512), 1))
        mask = cv2.GaussianBlur(mask.astype(np.float64), (k, k), sigma)
        mask = cv2.GaussianBlur(mask, (k, k), sigma)
        mask[:border, :] = 0
        mask[-border:, :] = 0
        mask[:, :border] = 0
        mask[:, -border:] = 0
        mask = (mask / 255.0).astype(np.float32)
        if size != n:
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
        return mask
