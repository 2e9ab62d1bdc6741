"""DIC: parity with the official network on the fixture weights, the mmagic layout, wrappers, errors, landmarks.

The full-size model (21.8 M parameters, ~45 GMAC per face) runs once, for the parity check against the official
outputs; everything else uses a small configuration with the same key structure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, fixture_path
from synth import load_shapes, save_legacy, synth_state_dict
from vs_keep.errors import CheckpointError, InputError
from vs_keep.models import dic, load
from vs_keep.models.dic import DICNet, TRAINING_MEAN, heatmaps_to_landmarks

SHAPES = FIXTURES / "dic_state_dict_shapes.json"
KEYMAP = FIXTURES / "dic_official_to_mmagic_keys.json"
SMALL = dict(num_features=8, num_groups=2, num_fusion_blocks=2, fusion_mid_channels=40, hg_features=32)


def _mmagic_names() -> dict[str, str]:
    return json.loads(fixture_path(KEYMAP.name).read_text())["mapping"]


def _to_mmagic(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename with the fixture's official->mmagic map (an oracle independent of our converter)."""
    names = _mmagic_names()
    return {"generator." + names[k]: v for k, v in sd.items()}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(fixture_path("golden_dic_synth.pt"), weights_only=True)


@pytest.fixture(scope="module")
def full_sd() -> dict[str, torch.Tensor]:
    return synth_state_dict(load_shapes(fixture_path(SHAPES.name)))


@pytest.fixture(scope="module")
def parity_run(golden: dict, full_sd: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = save_legacy(full_sd, tmp_path_factory.mktemp("dic") / "dic_official.pth", wrapper="state_dict")
    net = load(path, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        sr, heat, att = net(golden["input"], return_attention=True)
    return net, sr, heat, att


@pytest.fixture(scope="module")
def small_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = [(k, list(v.shape)) for k, v in DICNet(**SMALL).state_dict().items()]
    return synth_state_dict(shapes)


def test_parity_sr_every_step(parity_run: tuple, golden: dict) -> None:
    net, sr, _, _ = parity_run
    assert isinstance(net, DICNet) and net.layout == "official" and net.input_mean is None
    assert (net.scale, net.input_size, net.num_keypoints, net.num_steps) == (8, 16, 68, 4)
    assert len(sr) == 4
    for step, (ours, ref) in enumerate(zip(sr, golden["sr_outs"])):
        assert ours.shape == (2, 3, 128, 128)
        err = (ours - ref).abs().max().item()
        assert err <= 1e-3, f"step {step}: SR max abs error {err:.3g}"


def test_parity_heatmaps_and_attention_every_step(parity_run: tuple, golden: dict) -> None:
    _, _, heat, att = parity_run
    assert len(heat) == 4 and len(att) == 3
    for name, ours_list, refs in (("heatmap", heat, golden["heatmap_outs"]), ("attention5", att, golden["attention5"])):
        for step, (ours, ref) in enumerate(zip(ours_list, refs)):
            assert ours.shape == ref.shape
            rel = ((ours - ref).abs().max() / ref.abs().max()).item()
            assert rel <= 1e-4, f"{name} step {step}: error {rel:.3g} of the step's max |value|"
    marks = heatmaps_to_landmarks(heat[-1])
    assert marks.shape == (2, 68, 2) and marks.dtype == torch.float32
    assert bool(((marks >= 0) & (marks <= 127)).all())


def test_converter_matches_fixture_key_map(full_sd: dict) -> None:
    mm = _to_mmagic(full_sd)
    mm["discriminator.conv0_0.weight"] = torch.zeros(4, 3, 3, 3)  # DICGAN files carry the discriminator too
    assert dic.detect(full_sd) and dic.detect(mm)
    converted = dic.convert(mm)
    assert converted.source_layout == "mmagic" and dic.convert(full_sd).source_layout == "official"
    assert list(converted) == list(full_sd)
    assert all(converted[k] is full_sd[k] for k in full_sd)
    with torch.device("meta"):
        a, b = dic.build(dic.convert(full_sd)), dic.build(converted)
    assert a.input_mean is None and a.skip_size is None
    assert b.input_mean == pytest.approx(TRAINING_MEAN) and b.skip_size == (128, 128) and b.layout == "mmagic"
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


def test_mmagic_file_runs_the_mmagic_pipeline(small_sd: dict, tmp_path: Path) -> None:
    official = load(save_legacy(small_sd, tmp_path / "off.pth", wrapper="state_dict"))
    mm = load(save_legacy(_to_mmagic(small_sd), tmp_path / "mm.pth", wrapper="state_dict"))
    assert mm.layout == "mmagic" and official.layout == "official"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    mean = torch.tensor(TRAINING_MEAN).view(1, 3, 1, 1)
    assert mean.mul(255).flatten().tolist() == pytest.approx([129.795, 108.12, 96.39])
    with torch.no_grad():
        sr_mm, heat_mm = mm(x)
        sr_shift, heat_shift = official(x - mean)  # mmagic: normalise, run the bare net, add the mean back
        sr_plain, _ = official(x)
    for a, b, h1, h2 in zip(sr_mm, sr_shift, heat_mm, heat_shift):
        assert (a - (b + mean)).abs().max().item() <= 1e-6
        assert (h1 - h2).abs().max().item() <= 1e-5 * max(1.0, h2.abs().max().item())
    # the mean shift is not a no-op on these weights
    assert max((a - b).abs().max().item() for a, b in zip(sr_mm, sr_plain)) > 1e-3
    # the official network run with the training mean is the same function
    official.input_mean = TRAINING_MEAN
    with torch.no_grad():
        sr_off_mean, _ = official(x)
    assert torch.allclose(sr_off_mean[-1], sr_mm[-1], atol=1e-6)
    # mmagic's skip path is a fixed 128x128 upsample, so only 16x16 inputs work (the official one scales by 8)
    with pytest.raises(InputError, match="128x128"):
        mm(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match=r"\(B,3,H,W\)"):
        official(torch.rand(1, 1, 16, 16))


def test_official_wrappers_and_flat_files(small_sd: dict, tmp_path: Path) -> None:
    paths = [save_legacy(small_sd, tmp_path / name, wrapper=w) for name, w in (("sd.pth", "state_dict"), ("g.pth", "netG"), ("flat.pth", None))]
    # a training checkpoint: optimizer state and records next to the weights, zip format
    torch.save({"step": 5, "epoch": 1, "state_dict": small_sd, "best_pred": 27.0}, tmp_path / "ckp.pth")
    for path in paths + [tmp_path / "ckp.pth"]:
        net = load(path, device="cpu", dtype=torch.float32)
        assert isinstance(net, DICNet) and net.layout == "official" and not net.training, path.name
        loaded = net.state_dict()
        assert list(loaded) == list(small_sd) and all(torch.equal(loaded[k], v) for k, v in small_sd.items()), path.name


def test_bad_files_raise_checkpoint_error(small_sd: dict, tmp_path: Path) -> None:
    good = save_legacy(small_sd, tmp_path / "good.pth", wrapper="state_dict")
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 64)
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "unknown.pth")
    missing = {k: v for k, v in small_sd.items() if not k.startswith("HG.hg.res_center.")}
    save_legacy(missing, tmp_path / "missing.pth", wrapper="state_dict")
    odd = dict(small_sd)
    odd["conv_in.0.weight"] = torch.zeros(20, 3, 3, 3)  # not 4 x num_features
    save_legacy(odd, tmp_path / "odd.pth", wrapper="state_dict")
    for name, fragment in (
        ("truncated.pth", "truncated"),
        ("noise.pth", "noise.pth"),
        ("unknown.pth", "unknown model"),
        ("missing.pth", "missing keys"),
        ("odd.pth", "conv_in"),
    ):
        with pytest.raises(CheckpointError, match=fragment):
            load(tmp_path / name)
    # a DIC file lacking a marker key is named as the closest family
    no_hg = {k: v for k, v in small_sd.items() if k != "HG.compress_in.weight"}
    save_legacy(no_hg, tmp_path / "no_hg.pth")
    with pytest.raises(CheckpointError, match="closest supported model is 'dic'"):
        load(tmp_path / "no_hg.pth")


def test_landmark_decoding_convention() -> None:
    # Targets as DIC's training data draws them: a Gaussian (sigma 1 cell) at p/4 on the 32x32 grid.
    points = torch.tensor([[40.0, 52.0], [41.0, 52.0], [63.0, 70.5], [10.6, 117.3]])
    grid = torch.arange(32, dtype=torch.float32)
    cx, cy = points[:, 0] / 4, points[:, 1] / 4
    d2 = (grid.view(1, 1, 32) - cx.view(-1, 1, 1)) ** 2 + (grid.view(1, 32, 1) - cy.view(-1, 1, 1)) ** 2
    heat = torch.exp(-d2 / 2).unsqueeze(0)  # (1, 4, 32, 32)
    coarse = heatmaps_to_landmarks(heat, refine=False)[0]
    fine = heatmaps_to_landmarks(heat)[0]
    assert torch.equal(coarse[0], points[0]) and torch.equal(fine[0], points[0])  # on a cell centre: exact
    assert (coarse - points).abs().max().item() <= 2.0  # half a cell
    assert (fine - points).abs().max().item() <= 1.0 + 1e-6  # a quarter cell
    assert fine[1, 0].item() == pytest.approx(41.0)  # 0.25 cell right of cell 10 -> 40 + 1
    assert heatmaps_to_landmarks(heat, out_size=64)[0, 0].tolist() == [20.0, 26.0]


def test_merge_to_five_components() -> None:
    heat = torch.zeros(1, 68, 4, 4)
    heat[0, 37, 1, 1] = 2.0  # left eye, peak 2 -> normalised to 1
    heat[0, 50, 2, 2] = 0.01  # mouth, peak below 0.05 -> divided by 0.05
    heat[0, 5] = -1.0  # contour, negative everywhere -> divided by 0.05
    five = dic.merge_heatmaps(heat)
    assert five.shape == (1, 5, 4, 4)
    assert five[0, 0, 1, 1].item() == pytest.approx(1.0)
    assert five[0, 3, 2, 2].item() == pytest.approx(0.2)
    assert five[0, 4, 0, 0].item() == pytest.approx(-20.0)
    assert math.isclose(five[0, 1].abs().sum().item() + five[0, 2].abs().sum().item(), 0.0)
