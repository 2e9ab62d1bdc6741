"""`vs-keep restore --aligned`: the README's main job on aligned face frames, through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from media import probe, write_video
from vs_keep.aligned import restore_aligned
from vs_keep.engine import EngineOptions, load_model
from vs_keep.models.synthetic import write_synthetic_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


def faces(n: int, size: int = 128) -> list[np.ndarray]:
    """A real photo (scikit-image's astronaut face region) drifting by a pixel per frame."""
    from skimage import data

    img = data.astronaut()[20:260, 140:380]
    return [cv2.resize(np.roll(img, i, axis=1), (size, size), interpolation=cv2.INTER_AREA) for i in range(n)]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vs_keep", "restore", *args], capture_output=True, text=True, timeout=600)


def test_folder_to_folder_matches_engine(weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    frames = faces(11)  # 8 + 3: two chunks, the second shorter
    for i, f in enumerate(frames):
        cv2.imwrite(str(src / f"{i:04d}.png"), f[..., ::-1])
    r = cli("--aligned", str(src), str(tmp_path / "out"), "--weights", str(weights), "--chunk", "8", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # nothing on stdout
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outs) == 11
    torch.set_num_threads(2)
    net, autocast = load_model(EngineOptions(weights=weights, device="cpu"))  # what the CLI ships (CPU rewrites on)
    want = list(restore_aligned(net, frames, chunk=8, autocast=autocast))
    got = [cv2.imread(str(p))[..., ::-1] for p in outs]
    for w, g in zip(want, got):
        assert np.abs(w.astype(int) - g.astype(int)).max() <= 1


def test_video_keeps_frames_fps_and_audio(weights: Path, tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", faces(12), fps=Fraction(24000, 1001), audio=True)
    out = tmp_path / "out.mp4"
    r = cli("--aligned", str(src), str(out), "--weights", str(weights), "--chunk", "5", "--crf", "20", "--preset", "ultrafast")
    assert r.returncode == 0, r.stderr
    info, ref = probe(out), probe(src)
    assert info["frames"] == 12 and info["fps"] == ref["fps"] and info["size"] == (128, 128)
    assert info["audio_streams"] == 1 and info["audio_packets"] == ref["audio_packets"]


def test_bad_arguments(weights: Path, tmp_path: Path) -> None:
    r = cli("--aligned", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4"), "--weights", str(weights))
    assert r.returncode == 1 and "input not found" in r.stderr and "Traceback" not in r.stderr
    r = cli("--aligned", str(tmp_path), str(tmp_path / "o"), "--weights", str(weights), "--chunk", "0")
    assert r.returncode == 1 and "--chunk" in r.stderr
    r = cli("--aligned", str(tmp_path), str(tmp_path / "o"), "--weights", str(weights), "--model", "codeformer")
    assert r.returncode == 1
    # scene_detect: the filter's value set and validator; a file has no props to read
    r = cli(str(tmp_path), str(tmp_path / "o"), "--weights", str(weights), "--scene-detect", "props")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "vs-keep restore: --scene-detect must be one of 'auto', 'off', got 'props': 'props' reads VapourSynth "
        "frame props (_SceneChangePrev), which a decoded file does not carry"]
    r = cli(str(tmp_path), str(tmp_path / "o.xyz"), "--weights", str(weights))  # refused before any work
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"vs-keep restore: {tmp_path / 'o.xyz'}: this ffmpeg has no container for the suffix '.xyz'; use .mkv, .mp4 "
        "or .mov (no suffix: a folder of PNG frames)"]
    r = cli(str(tmp_path), str(tmp_path / "o"), "--weights", str(weights), "--scene-detect", "on")  # no 'props' offered
    assert r.returncode == 1 and "--scene-detect must be one of 'auto', 'off', got 'on'" in r.stderr


def test_full_frames_video(weights: Path, tmp_path: Path) -> None:
    """The main job on whole frames: real photos composited into a moving scene, faces detected and pasted."""
    from data.face_scenes import two_face_scene

    frames = two_face_scene(n=10).frames
    src = write_video(tmp_path / "scene.mp4", frames, fps=Fraction(30000, 1001), audio=True)
    out = tmp_path / "restored.mkv"
    r = cli(str(src), str(out), "--weights", str(weights), "--chunk", "6", "--preset", "ultrafast", "--no-progress")
    assert r.returncode == 0, r.stderr
    info, ref = probe(out), probe(src)
    assert info["frames"] == 10 and info["fps"] == ref["fps"] and info["size"] == (320, 240)
    assert info["audio_streams"] == 1
    # faces changed (the synthetic model is no identity), the background corner did not
    import av

    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        inp = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    diff = np.abs(got[0].astype(int) - inp[0].astype(int))
    assert diff[200:, 250:].mean() < 3 and diff[40:110, 20:90].mean() > 5
