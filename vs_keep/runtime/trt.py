"""TensorRT engine for KEEP's codebook decoder: build with the Python API, cache, run on torch's stream.

Cache: `<cache dir>/trt/decoder-<model hash>-<identity hash>.engine` with the timing cache beside it
(`.timing`) and the identity in clear text (`.json`). The identity covers everything that changes the engine:
model weights hash, input shapes, precision, builder options, GPU name and compute capability, driver version,
TensorRT version. `<cache dir>` is the cache root of `vs_keep.cache` (never site-packages).
Builds are written atomically and serialised by a file lock (`vs_keep.atomic`), so several VapourSynth
instances can start at once.

`tensorrt` is imported inside functions only; `TensorRTUnavailable` (no TensorRT, no CUDA device) becomes an
InputError naming `decoder` (`runtime.backends.TensorRTBackend`): an opt-in backend never falls back to torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_write, file_lock
from ..cache import folder
from ..errors import VsKeepError
from .decoder import DecoderSpec

log = logging.getLogger(__name__)

__all__ = ["TensorRTUnavailable", "TrtDecoder", "build_trt_engine", "device_identity", "engine_paths"]

MIN_ENGINE_BYTES = 1024


class TensorRTUnavailable(VsKeepError):
    """TensorRT (or a CUDA device for it) is missing."""


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable("TensorRT is not installed (pip install tensorrt)") from exc
    return tensorrt


def _driver_version() -> str:
    """CUDA driver version from libcuda (torch does not expose it); 'unknown' if it cannot be read."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"{v.value // 1000}.{(v.value % 1000) // 10}"
    return "unknown"


def device_identity(device_id: int) -> dict[str, str]:
    """GPU name, compute capability and driver of `device_id` (asked from the runtime, not nvidia-smi)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA device; none is available")
    props = torch.cuda.get_device_properties(device_id)
    return {"gpu": props.name, "cc": f"{props.major}.{props.minor}", "driver": _driver_version()}


def engine_paths(identity: dict[str, Any], model_hash: str, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """engine / timing cache / identity json / lock paths for an identity dict."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    base = folder("trt", cache_dir) / f"decoder-{model_hash}-{key}"
    return {
        "engine": base.with_suffix(".engine"),
        "timing": base.with_suffix(".timing"),
        "identity": base.with_suffix(".json"),
        "lock": base.with_suffix(".lock"),
    }


def _pin_fp32(trt: Any, network: Any, patterns: tuple[str, ...]) -> int:
    """Keep layers whose (ONNX scope) name contains one of `patterns` in fp32; returns how many were pinned."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not any(p in layer.name for p in patterns):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype != trt.float32 for o in outputs):
            continue  # shape / index arithmetic: nothing to pin
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def build_trt_engine(onnx_path: Path, paths: dict[str, Path], identity: dict[str, Any], *, precision: str, workspace_gib: float,
                 opt_level: int, force: bool = False, fp32_layers: tuple[str, ...] = ()) -> Path:
    """Build (or reuse) the engine for `onnx_path`; returns the engine path. `fp32_layers`: name fragments of
    layers that stay fp32 in a 16-bit engine (the accuracy guard of runtime.precision)."""
    trt = import_tensorrt()
    engine = paths["engine"]
    with file_lock(paths["lock"]):
        if not force and engine.exists() and engine.stat().st_size >= MIN_ENGINE_BYTES:
            return engine
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise VsKeepError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        config.builder_optimization_level = int(opt_level)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        else:  # TensorRT allows TF32 (10-bit mantissa) by default: too coarse for the codebook argmax
            config.clear_flag(trt.BuilderFlag.TF32)
        if precision != "fp32" and fp32_layers:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            log.debug("TensorRT: %d layers pinned to fp32", _pin_fp32(trt, network, fp32_layers))
        timing_blob = paths["timing"].read_bytes() if paths["timing"].exists() else b""
        timing = config.create_timing_cache(timing_blob)
        config.set_timing_cache(timing, ignore_mismatch=False)
        log.info("building the TensorRT decoder engine (%s, %s); this takes a few minutes once", precision, identity["gpu"])
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise VsKeepError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        atomic_write(engine, bytes(serialized))
        atomic_write(paths["timing"], bytes(config.get_timing_cache().serialize()))
        atomic_write(paths["identity"], json.dumps(identity, indent=1, sort_keys=True).encode())
        log.info("TensorRT engine ready in %.0f s: %s", time.perf_counter() - start, engine)
    return engine


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT64": torch.int64, "INT32": torch.int32}


class TrtDecoder:
    """Runs the decoder engine on torch's current CUDA stream; callable like `KEEP.decode_codes`."""

    def __init__(self, engine_path: Path, spec: DecoderSpec, device_id: int) -> None:
        trt = import_tensorrt()
        self.spec = spec
        self.device = torch.device("cuda", device_id)
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(logger)
            self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise VsKeepError(f"TensorRT could not load {engine_path}; delete it to rebuild")
            self.context = self.engine.create_execution_context()
        self.dtypes = {
            name: _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name] for name in (*spec.input_names, *spec.output_names)
        }

    def __call__(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> tuple[Tensor, dict[int, Tensor]]:
        s, dev = self.spec, self.device
        keep = {n: t.to(device=dev, dtype=self.dtypes[n]).contiguous() for n, t in s.feeds(idx, feats, memory).items()}
        outputs = {n: torch.empty(shape, device=dev, dtype=self.dtypes[n]) for n, shape in s.output_shapes().items()}
        for name, t in (*keep.items(), *outputs.items()):
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(dev).cuda_stream):
            raise VsKeepError("TensorRT decoder execution failed")
        out = outputs["out"]
        return out, {r: outputs[f"new_mem_{r}"] for r, _ in s.memory}
