"""Opt-in bf16 on CPU (`cpu_precision="bf16"`): refused with one clear error where the CPU has no bf16 units or
OpenVINO is missing; where it runs, KEEP's decoder is OpenVINO's, close to fp32 but not bit-exact."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vs_keep.engine import EngineOptions, load_model, validate
from vs_keep.errors import InputError
from vs_keep.models.synthetic import write_synthetic_checkpoint
from vs_keep.runtime.cpu_choice import cpu_kind
from vs_keep.runtime.openvino import BF16_FLAGS, check_bf16_cpu

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_BF16 = any(f in cpu_kind()["flags"] for f in BF16_FLAGS)


@pytest.fixture(scope="module")
def keep_weights(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


@pytest.fixture
def home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VS_KEEP_HOME", str(tmp_path))  # the exported decoder graph goes there
    return tmp_path


def frames(t: int = 3, s: int = 128) -> torch.Tensor:
    return torch.rand(t, 3, s, s, generator=torch.Generator().manual_seed(7)) * 2 - 1


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_option_errors_name_the_parameter() -> None:
    with pytest.raises(InputError, match="cpu_precision must be 'fp32' or 'bf16', got 'fp16'"):
        validate(EngineOptions(cpu_precision="fp16"))
    with pytest.raises(InputError, match="cpu_precision='bf16' runs KEEP's codebook decoder in OpenVINO; it needs model='keep'"):
        validate(EngineOptions(cpu_precision="bf16", model="codeformer"))
    with pytest.raises(InputError, match="decoder='auto'"):
        validate(EngineOptions(cpu_precision="bf16", decoder="tensorrt"))
    with pytest.raises(InputError, match=r"needs a CPU with AVX512-BF16 or AMX; this one \(Old CPU, flags: avx2 fma\)"):
        check_bf16_cpu({"model": "Old CPU", "flags": ["avx2", "fma"]})


@pytest.mark.skipif(HAS_BF16 and HAS_OPENVINO, reason="this CPU runs bf16 (tested below)")
def test_refused_here(keep_weights) -> None:
    with pytest.raises(InputError, match="cpu_precision='bf16'"):
        load_model(EngineOptions(weights=keep_weights, device="cpu", cpu_precision="bf16"))


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs openvino")
def test_openvino_decoder_fp32_matches_torch(keep_weights, home) -> None:
    """The plumbing on any CPU: the exported decoder in OpenVINO fp32 gives torch's decoder output."""
    from vs_keep.runtime.backends import OpenVinoBackend
    from vs_keep.runtime.openvino import OpenVinoDecoder

    ref, _ = load_model(EngineOptions(weights=keep_weights, device="cpu"))
    net, _ = load_model(EngineOptions(weights=keep_weights, device="cpu"))
    dec = OpenVinoBackend(precision="fp32").decoder(net)
    assert isinstance(dec, OpenVinoDecoder) and list((home / "onnx").glob("decoder-*.onnx"))
    net.set_decoder(dec)
    x = frames()
    with torch.inference_mode():
        assert rel(net(x), ref(x)) < 1e-4


@pytest.mark.skipif(not (HAS_BF16 and HAS_OPENVINO), reason="needs AVX512-BF16/AMX and openvino")
def test_bf16_engine_close_to_fp32_not_exact(keep_weights, home) -> None:
    from vs_keep.runtime.openvino import OpenVinoDecoder

    ref, _ = load_model(EngineOptions(weights=keep_weights, device="cpu"))
    net, autocast = load_model(EngineOptions(weights=keep_weights, device="cpu", cpu_precision="bf16"))
    assert isinstance(net.codebook_decoder, OpenVinoDecoder) and net.codebook_decoder.precision == "bf16"
    x = frames()
    with torch.inference_mode(), autocast():
        got, want = net(x), ref(x)
    err = rel(got[:1], want[:1])  # first frame: no recurrence, the decoder's own bf16 error
    assert 1e-5 < err < 5e-2, err
