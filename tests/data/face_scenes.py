"""Real-photo test material for the face tests: the two public-domain still portraits and a small synthetic video
of those faces moving (one leaves the frame and comes back), with known ground-truth positions."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

GRACE_NAME = "grace_hopper_512x512.jpg"
GRACE_SYSTEM = Path("/usr/share/doc/facedetect/examples") / GRACE_NAME
GRACE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vs-keep-tests" / GRACE_NAME


def astronaut() -> np.ndarray:
    """skimage's astronaut (Eileen Collins, NASA, public domain), 512x512 RGB uint8, shipped in the wheel."""
    import skimage.data

    return skimage.data.astronaut()


def _fetch_grace() -> Path | None:
    """Extract the photo from Debian's `facedetect` package (157 kB .deb) into the test cache."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "facedetect"], cwd=tmp, check=True, capture_output=True, timeout=120)
            deb = next(Path(tmp).glob("facedetect_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True, capture_output=True, timeout=60)
        except (subprocess.SubprocessError, OSError, StopIteration):
            return None
        found = list((Path(tmp) / "x").rglob(GRACE_NAME))
        if not found:
            return None
        GRACE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], GRACE_CACHE)
    return GRACE_CACHE


def grace_hopper() -> np.ndarray:
    """Debian's grace_hopper_512x512.jpg (US Navy photo, public domain) as RGB uint8.

    Looked up in $VS_KEEP_GRACE_HOPPER, the `facedetect` package's doc folder, the test cache, else fetched with
    `apt-get download facedetect` (no install, no root needed). Skips the test only if all of that fails."""
    candidates = [Path(p) for p in [os.environ.get("VS_KEEP_GRACE_HOPPER")] if p] + [GRACE_SYSTEM, GRACE_CACHE]
    path = next((p for p in candidates if p.is_file()), None) or _fetch_grace()
    if path is None:
        pytest.skip(
            f"{GRACE_NAME} not available: install Debian's 'facedetect' package, or set VS_KEEP_GRACE_HOPPER "
            "(apt-get download facedetect failed here)"
        )
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"unreadable image {path}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


#: Face regions (x0, y0, x1, y1) of the two portraits, with forehead and chin.
ASTRONAUT_FACE = (150, 40, 300, 200)
GRACE_FACE = (150, 70, 380, 340)


@dataclass
class Scene:
    """Frames plus ground truth: where each face was pasted (its scale and top-left corner) per frame, or None."""

    frames: list[np.ndarray]
    placements: dict[str, list[tuple[float, float, float] | None]]


def _background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth, textured background (blurred noise over a gradient): realistic detail, no faces."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = np.stack([60 + 100 * xx / w, 80 + 60 * yy / h, 140 - 60 * xx / w], axis=2)
    return np.clip(grad + noise, 0, 255).astype(np.uint8)


def _composite(canvas: np.ndarray, face: np.ndarray, scale: float, x: float, y: float) -> None:
    """Paste `face` scaled by `scale` with its top-left at sub-pixel (x, y), feathered edges, in place."""
    h, w = canvas.shape[:2]
    m = np.array([[scale, 0, x], [0, scale, y]], np.float64)
    warped = cv2.warpAffine(face.astype(np.float32), m, (w, h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = np.zeros(face.shape[:2], np.float32)
    alpha[4:-4, 4:-4] = 1
    alpha = cv2.GaussianBlur(alpha, (0, 0), 2)
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    canvas[:] = a * warped + (1 - a) * canvas


def two_face_scene(n: int = 36, size: tuple[int, int] = (240, 320), empty_head: int = 0) -> Scene:
    """`empty_head` frames of background only, then `n` frames (H, W = size) with the astronaut's face (~55 px
    box) drifting across the left half (always visible) and Grace Hopper's face moving right, out through the
    right border (cut by it in frames ~6-12, gone in ~13-24) and back in from frame ~25."""
    h, w = size
    faces = {
        "astronaut": astronaut()[ASTRONAUT_FACE[1]:ASTRONAUT_FACE[3], ASTRONAUT_FACE[0]:ASTRONAUT_FACE[2]],
        "grace": grace_hopper()[GRACE_FACE[1]:GRACE_FACE[3], GRACE_FACE[0]:GRACE_FACE[2]],
    }
    bg = _background(h, w).astype(np.float32)
    frames: list[np.ndarray] = []
    places: dict[str, list[tuple[float, float, float] | None]] = {"astronaut": [], "grace": []}
    for _ in range(empty_head):
        frames.append(np.clip(np.rint(bg), 0, 255).astype(np.uint8))
        for name in places:
            places[name].append(None)
    for i in range(n):
        canvas = bg.copy()
        # (scale, x, y) of the face image's top-left corner; sub-pixel steps
        pa = (0.62, 20 + 0.7 * i, 40 + 0.35 * i)
        pg = (0.36, 190 + 9.5 * i if i < 17 else w + 40 - 9.0 * (i - 17), 60 + 0.5 * i)
        for name, (s, x, y) in (("astronaut", pa), ("grace", pg)):
            fh, fw = faces[name].shape[0] * s, faces[name].shape[1] * s
            if x >= w or x + fw <= 0:
                places[name].append(None)
                continue
            _composite(canvas, faces[name], s, x, y)
            places[name].append((s, x, y))
        frames.append(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    return Scene(frames=frames, placements=places)


def face_center(name: str, placement: tuple[float, float, float]) -> np.ndarray:
    """Centre (x, y) of a pasted face image in frame coordinates."""
    x0, y0, x1, y1 = ASTRONAUT_FACE if name == "astronaut" else GRACE_FACE
    s, x, y = placement
    return np.array([x + s * (x1 - x0) / 2, y + s * (y1 - y0) / 2])
