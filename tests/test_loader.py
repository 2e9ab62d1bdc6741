"""`vs_keep.models.load`: checkpoint formats it accepts and the one-line errors it gives for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from vs_keep.errors import CheckpointError, WeightsNotFoundError
from vs_keep.models import load
from vs_keep.models.codeformer import CodeFormer
from vs_keep.models.keep import KEEP
from vs_keep.models.synthetic import write_synthetic_checkpoint


@pytest.fixture(scope="module")
def small_keep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


@pytest.fixture(scope="module")
def small_cf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "cf_small.pth", "codeformer", "small")


def _sd(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, weights_only=True)
    return obj.get("params_ema", obj)


def test_codeformer_wrappers(small_cf: Path, tmp_path: Path) -> None:
    sd = _sd(small_cf)
    ref = load(small_cf)
    assert isinstance(ref, CodeFormer)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        want = ref(x)
    for name, obj in {
        "params.pth": {"params": sd},
        "flat.pth": sd,
        "module.pth": {f"module.{k}": v for k, v in sd.items()},
    }.items():
        torch.save(obj, tmp_path / name)  # zip format this time
        m = load(tmp_path / name)
        with torch.inference_mode():
            assert torch.equal(m(x), want), name


def test_device_and_dtype(small_keep: Path) -> None:
    m = load(small_keep, device="cpu", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    assert not any(p.requires_grad for p in m.parameters()) and not m.training


def _expect(path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="vs-keep download"):
        load(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "notes.pth"
    p.write_text("hello, I am a text file\n" * 10)
    _expect(p, "not a PyTorch checkpoint")
    empty = tmp_path / "empty.pth"
    empty.touch()
    _expect(empty, "empty")
    _expect(tmp_path, "directory")


@pytest.mark.parametrize("legacy", [True, False])
def test_truncated(small_keep: Path, tmp_path: Path, legacy: bool) -> None:
    src = tmp_path / "full.pth"
    torch.save(_sd(small_keep), src, _use_new_zipfile_serialization=not legacy)
    data = src.read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    _expect(p, "truncated")


def test_refuses_code(tmp_path: Path) -> None:
    p = tmp_path / "evil.pth"
    torch.save({"state": pickle.loads(pickle.dumps(Path("/x")))}, p)
    _expect(p, "refusing")


def test_unknown_model(tmp_path: Path) -> None:
    p = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, p)
    _expect(p, "unknown model", "conv1", "Supported: keep, codeformer")


def test_missing_unexpected_and_mismatched_keys(small_keep: Path, tmp_path: Path) -> None:
    sd = _sd(small_keep)
    dropped = dict(sd)
    for k in ["hq_encoder.blocks.2.conv.weight", "hq_encoder.blocks.2.conv.bias", "feat_emb.bias"]:
        dropped.pop(k)
    torch.save(dropped, tmp_path / "missing.pth")
    _expect(tmp_path / "missing.pth", "3 missing keys", "feat_emb.bias")
    extra = dict(sd, **{"extra.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    _expect(tmp_path / "extra.pth", "1 unexpected keys", "extra.weight")
    bad = dict(sd)
    bad["cross_fuse.16.norm1.weight"] = torch.zeros(7)
    torch.save(bad, tmp_path / "shape.pth")
    _expect(tmp_path / "shape.pth", "shape mismatch", "cross_fuse.16.norm1.weight")


def test_keep_small_loads(small_keep: Path) -> None:
    assert isinstance(load(small_keep), KEEP)


def test_loaded_networks_say_what_they_are(small_keep: Path, small_cf: Path) -> None:
    """The descriptor the engine, the CLI and the restorer adapters read (no guessing from names or signatures)."""
    from vs_keep.errors import InputError
    from vs_keep.face.restorers import ModuleRestorer
    from vs_keep.models import ModelInfo, model_info
    from vs_keep.models.dic import DICNet

    keep, cf = load(small_keep), load(small_cf)
    assert model_info(keep) == ModelInfo("keep", recurrent=True, takes_fidelity=False, scale=1)
    assert model_info(cf) == ModelInfo("codeformer", recurrent=False, takes_fidelity=True, scale=1)
    assert model_info(DICNet(num_features=8, num_groups=2)).scale == 8
    assert ModuleRestorer(keep).kind == "keep" and ModuleRestorer(cf).kind == "codeformer"
    with pytest.raises(InputError, match="not a vs-keep network"):
        model_info(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(InputError, match="'dic'"):
        ModuleRestorer(DICNet(num_features=8, num_groups=2))
