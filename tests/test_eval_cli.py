"""`vs-keep degrade` and `vs-keep eval` end to end on a real-photo clip: JSON schema, values, plots, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from eval_clips import panning_frames, write_video
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vs_keep.cli import main
from vs_keep.video import iter_frames

FRAMES = 8
SIZE = 192


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    src = write_video(root / "src.mkv", panning_frames(FRAMES, SIZE, origin=(120, 40)))
    mild, heavy = root / "mild", root / "heavy.mkv"
    assert main(["degrade", str(src), str(mild), "--level", "mild", "--seed", "4", "--no-progress"]) == 0
    assert main(["degrade", str(src), str(heavy), "--level", "heavy", "--seed", "4", "--no-progress"]) == 0
    return {"root": root, "src": src, "mild": mild, "heavy": heavy}


def test_degrade_cli_writes_params(clips) -> None:
    params = json.loads((clips["root"] / "mild.json").read_text())
    assert params["level"] == "mild" and params["seed"] == 4 and params["frames"] == FRAMES
    assert 18 <= params["crf"] <= 25 and 2 <= params["sigma"] <= 5 and 0 <= params["delta"] <= 5
    assert len(sorted(clips["mild"].glob("*.png"))) == FRAMES


def test_eval_cli_report_and_plots(clips, tmp_path: Path, capsys) -> None:
    report_path, plots = tmp_path / "report.json", tmp_path / "plots"
    code = main(["eval", "--reference", str(clips["src"]), "--restored", str(clips["mild"]), "--input",
                 str(clips["heavy"]), "--json", str(report_path), "--plots", str(plots), "--min-face", "60",
                 "--no-progress"])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["frames"] == FRAMES
    mean, per = report["mean"], report["per_frame"]
    for key in ("psnr", "ssim", "ids", "sigma_ids", "akd", "sigma_akd", "ewarp", "ewarp_reference"):
        assert key in mean
    # mean.psnr / mean.ssim: frame averages of BasicSR values, checked here against scikit-image.
    ref, out = list(iter_frames(clips["src"])), list(iter_frames(clips["mild"]))
    want_psnr = np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(ref, out)])
    want_ssim = np.mean([structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                               data_range=255, channel_axis=-1) for a, b in zip(ref, out)])
    assert mean["psnr"] == pytest.approx(want_psnr, abs=1e-3)
    assert mean["ssim"] == pytest.approx(want_ssim, abs=1e-4)
    assert len(per["psnr"]) == len(per["ssim"]) == FRAMES
    # Identity: dlib descriptor (identity extra, part of the test extra) on every frame; labelled as not ArcFace.
    assert "not ArcFace" in report["info"]["ids_backend"]
    assert report["info"]["face_frames"] == FRAMES
    assert 0.5 < mean["ids"] <= 1.0 and 0.0 <= mean["sigma_ids"] < 0.1
    assert len(per["ids"]) == FRAMES and all(v is not None for v in per["ids"])
    # Landmarks: some landmark set measured the mild clip.
    assert report["info"]["akd_landmarks"] in ("detector-5pt", "dlib-68pt")
    assert report["info"]["akd_frames"] >= 1 and 0.0 < mean["akd"] < 20.0 and mean["sigma_akd"] >= 0.0
    # Temporal: the degraded clips flicker more than the clean reference; one value per consecutive pair.
    assert len(per["ewarp"]) == len(per["ewarp_reference"]) == len(per["ewarp_input"]) == FRAMES - 1
    assert mean["ewarp"] > mean["ewarp_reference"] > 0
    assert report["info"]["skipped"]["lpips"].startswith("LPIPS skipped")
    assert mean["lpips"] is None
    # Plots exist, are real images with content.
    names = sorted(p.name for p in plots.glob("*.png"))
    assert names == ["fidelity.png", "flicker.png", "identity.png", "temporal.png"]
    for p in plots.glob("*.png"):
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 150 and img.shape[1] > 300 and img.std() > 10
    err = capsys.readouterr().err
    assert "psnr" in err and "plot:" in err


def test_eval_identical_clips_to_stdout(clips, capsys) -> None:
    code = main(["eval", "--reference", str(clips["src"]), "--restored", str(clips["src"]), "--frames", "3",
                 "--landmarks", "none", "--no-progress"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3
    assert report["mean"]["psnr"] == 100.0 and report["mean"]["ssim"] == pytest.approx(1.0)
    assert report["mean"]["ids"] == pytest.approx(1.0, abs=1e-6)
    assert report["mean"]["ewarp"] == report["mean"]["ewarp_reference"]
    assert report["mean"]["akd"] is None and "--landmarks none" in report["info"]["skipped"]["akd"]


def test_eval_rejects_mismatched_clips(clips, tmp_path: Path, capsys) -> None:
    short = write_video(tmp_path / "short.mkv", panning_frames(3, SIZE, origin=(120, 40)))
    code = main(["eval", "--reference", str(clips["src"]), "--restored", str(short), "--no-identity",
                 "--landmarks", "none", "--no-temporal", "--no-progress", "--json", str(tmp_path / "x.json")])
    assert code == 1
    assert "--frames" in capsys.readouterr().err
    small = write_video(tmp_path / "small.mkv", panning_frames(2, 96))
    assert main(["eval", "--reference", str(clips["src"]), "--restored", str(small), "--no-progress"]) == 1
    assert "frame-aligned" in capsys.readouterr().err
