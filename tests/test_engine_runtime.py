"""How the engine runs the model: the CPU rewrites, the precision policy and the pluggable codebook decoder are
what `vs-keep restore` and `vs_keep.keep` ship, so they are checked here through `vs_keep.engine.load_model`."""

from __future__ import annotations

import pytest
import torch

from vs_keep.engine import EngineOptions, build_engine, load_model
from vs_keep.errors import InputError
from vs_keep.models.synthetic import write_synthetic_checkpoint
from vs_keep.runtime.cpu import is_optimized


@pytest.fixture(scope="module")
def keep_weights(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


@pytest.fixture(scope="module")
def codeformer_weights(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "cf_small.pth", "codeformer", "small")


def frames(n: int = 3, size: int = 128) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5)) * 2 - 1


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())

def test_cpu_ships_the_fast_path_and_reference_on_request(keep_weights) -> None:
    fast, autocast = load_model(EngineOptions(weights=keep_weights, device="cpu"))
    ref, _ = load_model(EngineOptions(weights=keep_weights, device="cpu", cpu_fast=False))
    assert is_optimized(fast) and not is_optimized(ref)
    assert fast.codebook_decoder is None  # auto on CPU: eager torch decoder
    x = frames()
    with torch.inference_mode(), autocast():
        got, want = fast(x), ref(x)
    assert rel(got, want) < 1e-4


def test_auto_decoder_is_torch_on_every_device(keep_weights) -> None:
    """TensorRT is opt-in (never measured here; fp16 engines of StyleGAN-like decoders can give solid colour):
    `auto` leaves the eager decoder in place even on CUDA, before anything looks for TensorRT or a GPU."""
    from vs_keep.engine import _install_decoder

    net, _ = load_model(EngineOptions(weights=keep_weights, device="cpu"))
    for device in ("cpu", "cuda", "cuda:1"):
        for precision in ("fp32", "fp16"):
            _install_decoder(net, "auto", device, precision)
            assert net.codebook_decoder is None, (device, precision)
    with pytest.raises(InputError, match="decoder='tensorrt' needs CUDA"):
        _install_decoder(net, "tensorrt", "cpu", "fp32")


def test_fp16_request_on_cpu_runs_fp32(keep_weights) -> None:
    net, autocast = load_model(EngineOptions(weights=keep_weights, device="cpu", fp16=True))
    assert next(net.parameters()).dtype == torch.float32
    with autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_installed_decoder_replaces_the_decode_half(keep_weights) -> None:
    net, _ = load_model(EngineOptions(weights=keep_weights, device="cpu", cpu_fast=False))
    x = frames()
    with torch.inference_mode():
        want = net(x)
        calls = []
        eager = net.decode_codes

        def counting(idx, feats, memory):
            calls.append(memory is None)
            return eager(idx, feats, memory)

        net.set_decoder(counting)
        got = net(x)
        net.set_decoder(None)
        again = net(x)
    assert calls == [True, False, False]  # no CFA memory at the chunk's first frame only
    assert torch.equal(got, want) and torch.equal(again, want)
    assert "codebook_decoder" not in dict(net.named_modules()) and len(net.state_dict()) == len(net.state_dict(keep_vars=True))


def test_decoder_option_errors(keep_weights, codeformer_weights) -> None:
    for removed in ("trt", "onnxruntime"):  # onnxruntime: deleted, it bought nothing over the fp32 path on CPU
        with pytest.raises(InputError, match="decoder must be one of auto, torch, tensorrt"):
            load_model(EngineOptions(weights=keep_weights, device="cpu", decoder=removed))
    with pytest.raises(InputError, match="needs CUDA"):
        load_model(EngineOptions(weights=keep_weights, device="cpu", decoder="tensorrt"))
    with pytest.raises(InputError, match="KEEP's codebook decoder"):
        build_engine(EngineOptions(weights=codeformer_weights, model="codeformer", device="cpu", decoder="tensorrt"))


def test_codeformer_gets_the_cpu_path_too(codeformer_weights) -> None:
    net, _ = load_model(EngineOptions(weights=codeformer_weights, model="codeformer", device="cpu"))
    ref, _ = load_model(EngineOptions(weights=codeformer_weights, model="codeformer", device="cpu", cpu_fast=False))
    assert is_optimized(net)
    x = frames(2)
    with torch.inference_mode():
        assert rel(net(x, w=0.5, adain=True), ref(x, w=0.5, adain=True)) < 1e-4


def test_fp16_policy_runs_through_the_engine_restorer(keep_weights) -> None:
    """The CUDA fp16 path (precision policy + autocast around ClipRun's KEEP steps) on CPU, with 16-bit GEMMs
    emulated: mixed dtypes (fp16 generator output warped with fp32 flows, fp16 gains mixing fp32 latents) must run
    and stay close to fp32; the restorer hands back fp32 frames."""
    from vs_keep.face.restorers import ClipRun, ModuleRestorer
    from vs_keep.models import load
    from vs_keep.runtime.backends import TorchBackend
    from vs_keep.bench.emulation import EmulatedLowPrecision

    x = frames(3)
    ref_net = load(keep_weights)
    with torch.inference_mode():
        want = ref_net(x)
    backend = TorchBackend(device="cpu", precision="fp16", cpu_fast=False)
    net = backend.prepare(load(keep_weights))
    run = ClipRun(ModuleRestorer(net, autocast=backend.autocast), x)
    with EmulatedLowPrecision():
        got = torch.stack([run.frame(k) for k in range(3)])
    assert got.dtype == torch.float32 and run.steps == 3
    # measured 2.1e-3 / 4.2e-3; later frames of random synthetic weights drift once a code flips (as the fixture's)
    assert rel(got[0], want[0]) < 1e-2 and rel(got[1], want[1]) < 1e-2
    assert not torch.equal(got, want)  # the generator really ran in 16 bits
