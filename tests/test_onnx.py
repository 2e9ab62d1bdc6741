"""ONNX export of the codebook decoder (the hand-off to TensorRT and OpenVINO), checked by running the graph in
OpenVINO fp32; TensorRT cache identity (a missing TensorRT is an error: tests/test_gpu_path.py)."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch

from vs_keep.runtime.backends import TensorRTBackend
from vs_keep.models.synthetic import build_synthetic_keep
from vs_keep.runtime.decoder import DecoderSpec, decoder_spec
from vs_keep.runtime.onnx_export import export_decoder_onnx, model_hash
from vs_keep.runtime.trt import engine_paths


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def graph_decoder(path, spec: DecoderSpec):
    """The exported graph as a decoder callable (OpenVINO with its fp32 precision hint)."""
    if importlib.util.find_spec("openvino") is None:  # not importorskip: a plain `import openvino` forks (telemetry)
        pytest.skip("needs openvino")
    from vs_keep.runtime.openvino import OpenVinoDecoder

    return OpenVinoDecoder(path, spec, precision="fp32", threads=2)


def check_decoder(model: torch.nn.Module, path, spec: DecoderSpec, with_memory: tuple[bool, ...] = (True, False)) -> float:
    """Run the exported decoder with and without CFA memory, and torch's; worst relative error of every output."""
    graph = graph_decoder(path, spec)
    inputs = spec.example_inputs(n_codes=int(model.quantize.embedding.weight.shape[0]))
    nf = len(spec.feats)
    feats = {r: t for (r, _), t in zip(spec.feats, inputs[1 : 1 + nf])}
    memory = {r: t for (r, _), t in zip(spec.memory, inputs[1 + nf : 1 + nf + len(spec.memory)])}
    worst = 0.0
    for mem in (memory if m else None for m in with_memory):
        got, got_mem = graph(inputs[0], feats, mem)
        with torch.inference_mode():
            want, want_mem = model.decode_codes(inputs[0], feats, mem)
        assert got.shape == want.shape and set(got_mem) == set(want_mem)
        worst = max([worst, rel(got.numpy(), want.numpy())] + [rel(got_mem[r].numpy(), want_mem[r].numpy()) for r in want_mem])
    return worst


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return build_synthetic_keep("small")


@pytest.fixture(scope="module")
def small_onnx(small: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory):
    return export_decoder_onnx(small, tmp_path_factory.mktemp("onnx") / "decoder.onnx")


def test_decoder_onnx_small_matches_torch(small: torch.nn.Module, small_onnx) -> None:
    assert check_decoder(small, *small_onnx) < 1e-4


def test_decoder_graph_is_the_step_decoder(small: torch.nn.Module, small_onnx) -> None:
    """On a real chunk, the exported decoder replaces KEEP.step's decode half: frame 0 (no memory) and frame 1."""
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        chunk = small.prepare_chunk(frames)
        state = small.initial_state()
        graph, eager = graph_decoder(*small_onnx), small.decode_codes
        for t in range(2):
            trace: dict[str, torch.Tensor] = {}
            out, new_state = small.step(chunk, state, trace)
            feats = {r: chunk.feats[r][t : t + 1] for r in small.connect_list}
            memory = state.memory if t else None
            o_eager, m_eager = eager(trace["idx"], feats, memory)
            assert torch.equal(o_eager, out)  # the eager decoder is KEEP.step's, bit for bit
            o_graph, m_graph = graph(trace["idx"], feats, memory)
            assert rel(o_graph.numpy(), out.numpy()) < 1e-4
            for r in m_eager:
                assert rel(m_graph[r].numpy(), m_eager[r].numpy()) < 1e-4
            state = new_state


@pytest.mark.slow
def test_decoder_onnx_full_matches_torch(tmp_path) -> None:
    start = time.perf_counter()
    model = build_synthetic_keep("full")
    assert decoder_spec(model).input_shapes()["enc_64"] == (1, 256, 64, 64)
    path, spec = export_decoder_onnx(model, tmp_path / "decoder.onnx")
    assert check_decoder(model, path, spec, with_memory=(True,)) < 1e-4  # the small test covers no memory
    assert time.perf_counter() - start < 300  # ~35 s on 2 quiet cores; far more means something is wrong


# ---- TensorRT: identity (no TensorRT needed) -----------------------------------------------------------------------


def test_engine_identity_and_cache_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_KEEP_HOME", str(tmp_path))
    ident = {"model": "abc", "inputs": {"idx": [1, 256]}, "precision": "fp16", "gpu": "X", "driver": "1", "tensorrt": "10"}
    paths = engine_paths(ident, "abc")
    assert paths["engine"].parent == tmp_path / "trt" and paths["timing"].suffix == ".timing"
    for key, value in (("precision", "fp32"), ("gpu", "Y"), ("driver", "2"), ("tensorrt", "11"), ("inputs", {"idx": [2, 256]})):
        assert engine_paths({**ident, key: value}, "abc")["engine"] != paths["engine"], key
    assert engine_paths(dict(ident), "abc") == paths  # deterministic
    assert "cache_dir" not in repr(TensorRTBackend(cache_dir="/x"))  # fields that do not change the engine stay out


def test_model_hash_tracks_weights(small: torch.nn.Module) -> None:
    h = model_hash(small)
    assert h == model_hash(small) and len(h) == 16
    other = build_synthetic_keep("small")
    with torch.no_grad():
        other.quantize.embedding.weight[0, 0] += 1
    assert model_hash(other) != h


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is None, reason="needs CUDA and TensorRT")
def test_tensorrt_decoder_matches_torch(small: torch.nn.Module, tmp_path) -> None:
    from vs_keep.runtime.trt import TrtDecoder

    model = build_synthetic_keep("small").cuda()
    spec = decoder_spec(model)
    args = [a.cuda() for a in spec.example_inputs(n_codes=256)]
    feats = {r: a for (r, _), a in zip(spec.feats, args[1:])}
    memory = {r: a for (r, _), a in zip(spec.memory, args[1 + len(spec.feats):])}
    with torch.inference_mode():
        want, _ = model.decode_codes(args[0], feats, memory)
        for precision, tol in (("fp32", 1e-3), ("fp16", 5e-2)):
            backend = TensorRTBackend(precision=precision, cache_dir=str(tmp_path))
            dec = backend.decoder(model)
            assert isinstance(dec, TrtDecoder)
            got, _ = dec(args[0], feats, memory)
            torch.cuda.synchronize()
            assert float((got.float() - want).norm() / want.norm()) < tol
            assert backend.engine_path(model).stat().st_size > 1024  # cached: second call reuses it
