"""CodeFormer on the shared core: strict loading of a `params_ema` checkpoint and parity with the official golden."""

from __future__ import annotations

import pytest
import torch

from vs_keep.models import load
from vs_keep.models.codeformer import CodeFormer

from conftest import fixture_path
from synth import load_shapes, save_legacy, synth_state_dict


@pytest.fixture(scope="module")
def codeformer(tmp_path_factory: pytest.TempPathFactory) -> CodeFormer:
    sd = synth_state_dict(load_shapes(fixture_path("codeformer_state_dict_shapes.json")))
    path = save_legacy(sd, tmp_path_factory.mktemp("cf") / "codeformer.pth", wrapper="params_ema")
    model = load(path, device="cpu", dtype=torch.float32)
    assert isinstance(model, CodeFormer)
    return model


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return torch.load(fixture_path("golden_codeformer_synth.pt"), weights_only=True)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_official_tap_blocks(codeformer: CodeFormer) -> None:
    # Fusion points of the official config: encoder blocks 14/11/8/5, generator blocks 9/12/15/18.
    assert {r: codeformer.encoder.tap_blocks[r] for r in (32, 64, 128, 256)} == {32: 14, 64: 11, 128: 8, 256: 5}
    assert {r: codeformer.generator.tap_blocks[r] for r in (16, 32, 64, 128, 256)} == {16: 6, 32: 9, 64: 12, 128: 15, 256: 18}
    assert len(codeformer.state_dict()) == 515


@pytest.mark.slow
def test_parity_with_official(codeformer: CodeFormer, golden: dict[str, torch.Tensor]) -> None:
    x = golden["input"]
    with torch.inference_mode():
        out05, logits, lq = codeformer.restore_with_codes(x, w=0.5, adain=True)
        out0 = codeformer(x, w=0.0, adain=True)
    assert (lq - golden["lq_feat"]).abs().max() < 1e-4
    assert (logits - golden["logits"]).abs().max() < 1e-4
    idx = logits.argmax(dim=2)
    assert torch.equal(idx, golden["top_idx"][..., 0])
    assert rel_l2(out05, golden["output_w05"]) < 1e-4
    assert rel_l2(out0, golden["output_w0"]) < 1e-4
    assert (out05 - golden["output_w05"]).abs().max() < 1e-3
