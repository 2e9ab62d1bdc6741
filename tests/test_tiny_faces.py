"""Tiny-face mode (issue: DIC as vs-keep's tiny-face path): faces below min_face go through DIC x8 per frame,
bigger ones still through KEEP, in the VapourSynth filter and in the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.face_scenes import ASTRONAUT_FACE, GRACE_FACE, _background, _composite, astronaut, grace_hopper
from media import probe, write_video
from vs_keep.face import create_detector, detect_faces
from vs_keep.face.tiny import TinyFaceRestorer
from vs_keep.models import load
from vs_keep.models.synthetic import write_synthetic_checkpoint

N = 6


def tiny_scene(n: int = N) -> list[np.ndarray]:
    """A ~53 px astronaut face (KEEP) and a ~18 px Grace Hopper face (DIC), both drifting."""
    a = astronaut()[ASTRONAUT_FACE[1] : ASTRONAUT_FACE[3], ASTRONAUT_FACE[0] : ASTRONAUT_FACE[2]]
    g = grace_hopper()[GRACE_FACE[1] : GRACE_FACE[3], GRACE_FACE[0] : GRACE_FACE[2]]
    bg = _background(240, 320).astype(np.float32)
    frames = []
    for i in range(n):
        c = bg.copy()
        _composite(c, a, 0.6, 20 + 0.5 * i, 40)
        _composite(c, g, 0.1, 220 + 0.3 * i, 80)
        frames.append(np.clip(np.rint(c), 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    return {
        "keep": write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small"),
        "dic": write_synthetic_checkpoint(d / "dic_small.pth", "dic", "small"),
        "video": write_video(d / "tiny.mp4", tiny_scene(), fps=25, audio=True),
    }


def test_tiny_restorer_maps_back_to_the_frame(files) -> None:
    frame = tiny_scene(1)[0]
    dets = detect_faces(create_detector("mtcnn", "cpu", min_face_size=12), frame, min_face_size=12)
    small = [d for d in dets if d.size < 20]
    assert len(small) == 1
    restorer = TinyFaceRestorer(load(files["dic"]))
    [(paste, face)] = restorer.restore(frame, small, 0)
    assert paste.image.shape == (128, 128, 3) and face.landmarks68.shape == (68, 2)
    x0, y0, x1, y1 = face.box
    assert (face.landmarks68[:, 0] >= x0 - 1).all() and (face.landmarks68[:, 0] <= x1 + 1).all()
    assert (face.landmarks68[:, 1] >= y0 - 1).all() and (face.landmarks68[:, 1] <= y1 + 1).all()
    # the crop matrix maps the square box onto the 128 crop
    corners = paste.matrix @ np.array([[x0, x1], [y0, y1], [1, 1]])
    assert np.allclose(corners, [[0, 128], [0, 128]], atol=1e-3)


def test_plugin_tiny_and_keep_faces(files) -> None:
    vs = pytest.importorskip("vapoursynth")
    from vs_keep import keep
    from vs_keep.plugin import source

    src = source(files["video"])
    out = keep(src, weights=str(files["keep"]), chunk=N, tiny_faces="dic", tiny_weights=str(files["dic"]))
    plain = keep(src, weights=str(files["keep"]), chunk=N)
    with out.get_frame(2) as f, plain.get_frame(2) as p, src.get_frame(2) as s:
        assert f.props["KeepFaces"] == 1 and f.props["KeepTinyFaces"] == 1
        lm = np.array(f.props["KeepTinyLandmarks"]).reshape(-1, 2)
        assert lm.shape == (68, 2) and (lm[:, 0] > 200).all()  # on the small face, right of the big one
        img = np.stack([np.asarray(f[i]) for i in range(3)], -1).astype(int)
        ref = np.stack([np.asarray(p[i]) for i in range(3)], -1).astype(int)
        raw = np.stack([np.asarray(s[i]) for i in range(3)], -1).astype(int)
        assert "KeepTinyFaces" not in p.props
    # the tiny face changed only in tiny mode; the big face went through KEEP in both (the detector searches a
    # finer pyramid in tiny mode, so its landmarks, and hence its pixels, may differ slightly)
    assert np.abs(img[80:110, 215:250] - raw[80:110, 215:250]).mean() > 1
    assert np.array_equal(ref[80:110, 215:250], raw[80:110, 215:250])
    for out_img in (img, ref):
        assert np.abs(out_img[55:115, 40:85] - raw[55:115, 40:85]).mean() > 1


def test_cli_tiny_faces(files, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    r = subprocess.run(
        [sys.executable, "-m", "vs_keep", "restore", str(files["video"]), str(out), "--weights", str(files["keep"]),
         "--tiny-weights", str(files["dic"]), "--chunk", str(N), "--preset", "ultrafast", "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert probe(out)["frames"] == N
