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
    assert ModuleRestorer(keep).info.kind == "keep" and ModuleRestorer(cf).info.kind == "codeformer"
    with pytest.raises(InputError, match="not a vs-keep network"):
        model_info(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(InputError, match="'dic'"):
        ModuleRestorer(DICNet(num_features=8, num_groups=2))


# ---- KEEP layouts: the architecture comes from the tensors ------------------------------------------------------

#: (SFT sizes, cross-frame sizes) of the small config: v0.1.0's 16/32/64 and the small image of the 32/64/128/256
#: layout (SFT above the standard sizes, a cross-frame size without SFT), each with and without cross-frame lists
LAYOUTS = {
    "standard": ((16, 32, 64), (16, 32)),
    "standard-nocfa": ((16, 32, 64), ()),
    "wide": ((32, 64, 128), (16, 32)),
    "wide-nocfa": ((32, 64, 128), ()),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_keep_layouts_load_strictly_and_run(layout: str, tmp_path: Path) -> None:
    """Both key namings (v0.1.0 flat; v1.0.0 `cft`/`cfa` under params_ema) give the same network and frames."""
    from vs_keep.models.synthetic import small_keep_config

    connect, cross = LAYOUTS[layout]
    config = small_keep_config(connect, cross)
    v0 = write_synthetic_checkpoint(tmp_path / "v0.pth", "keep", config=config)
    v1 = write_synthetic_checkpoint(tmp_path / "v1.pth", "keep", config=config, release="v1.0.0")
    raw = torch.load(v1, weights_only=True)
    assert set(raw) == {"params_ema"} and not any(k.startswith(("fuse_convs_dict.", "cross_fuse.")) for k in raw["params_ema"])
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5)) * 2 - 1
    outs = []
    for path in (v0, v1):
        model = load(path)
        assert isinstance(model, KEEP)
        assert model.connect_list == connect and model.cross_fuse_list == cross
        assert model.keep_config.core == config.core and model.keep_config.cross_fuse == config.cross_fuse
        with torch.inference_mode():
            outs.append(model(frames))
    assert torch.isfinite(outs[0]).all() and torch.equal(outs[0], outs[1])


def test_cross_frame_size_without_sft_is_applied(tmp_path: Path) -> None:
    """In the 32/64/128/256 layout the official loop runs cross-frame attention at 16, where there is no SFT: frame 1
    must depend on `cross_fuse.16` (it did not before: 1.26 relative off the official code on frames 1-2)."""
    from vs_keep.models.synthetic import small_keep_config

    path = write_synthetic_checkpoint(tmp_path / "wide.pth", "keep", config=small_keep_config((32, 64, 128), (16, 32)))
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(6)) * 2 - 1
    model = load(path)
    with torch.inference_mode():
        chunk = model.prepare_chunk(frames)
        _, state = model.step(chunk, model.initial_state())
        trace: dict[str, torch.Tensor] = {}
        out1, _ = model.step(chunk, state, trace)
        assert set(state.memory) == {16, 32} and "cfa_16" in trace and "cfa_32" in trace
        model.cross_fuse["16"].norm1.bias.add_(1.0)
        out0b, state_b = model.step(chunk, model.initial_state())
        out1b, _ = model.step(chunk, state_b)
    assert torch.equal(out0b, state.prev_out)  # frame 0 passes the cross-frame layers through
    assert not torch.equal(out1b, out1)


def test_keep_foreign_keys_are_named(tmp_path: Path) -> None:
    """A v1.0.0-style file with a tensor we cannot place, or without one we need: one error naming the keys."""
    from vs_keep.models.synthetic import small_keep_config

    src = write_synthetic_checkpoint(tmp_path / "v1.pth", "keep", config=small_keep_config((32, 64, 128)), release="v1.0.0")
    sd = torch.load(src, weights_only=True)["params_ema"]
    torch.save({"params_ema": dict(sd, **{"temporal_reg.64.weight": torch.zeros(4)})}, tmp_path / "extra.pth")
    _expect(tmp_path / "extra.pth", "1 unexpected keys", "temporal_reg.64.weight")
    torch.save({"params_ema": {k: v for k, v in sd.items() if k != "cfa.16.ff.net.2.bias"}}, tmp_path / "missing.pth")
    _expect(tmp_path / "missing.pth", "1 missing keys", "cross_fuse.16.ff.net.2.bias")
