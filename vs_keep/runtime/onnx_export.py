"""ONNX export of KEEP's codebook decoder, and the model hash that names exported files and engines.

The ONNX file is the hand-off format for TensorRT (`runtime.trt`) and OpenVINO (`runtime.openvino`). Export uses
the TorchScript-based exporter (no onnxscript dependency) with static shapes: one face size and batch per file,
which is what an engine cache keys on anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import VsKeepError
from .decoder import CodebookDecoder, DecoderSpec, decoder_spec

log = logging.getLogger(__name__)

__all__ = ["OPSET", "export_decoder_onnx", "model_hash"]

OPSET = 17


def model_hash(model: nn.Module, length: int = 16) -> str:
    """sha256 of the model's state dict (names, shapes, dtypes, values): identifies weights for engine caches."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def export_decoder_onnx(model: nn.Module, path: str | os.PathLike[str]) -> tuple[Path, DecoderSpec]:
    """Write the decoder graph of `model` (fp32, on CPU) to `path`; returns (path, spec). Atomic (temp + rename).
    The graph holds the reference ops: the CPU rewrites (`runtime.cpu`) step aside while the exporter traces."""
    spec = decoder_spec(model)
    wrapper = CodebookDecoder(model).eval()
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise VsKeepError("export_decoder_onnx: export a float32 CPU model (load it with device='cpu')")
    n_codes = int(model.quantize.embedding.weight.shape[0])
    inputs = spec.example_inputs(n_codes=n_codes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(), _quiet():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
            torch.onnx.export(
                wrapper, inputs, tmp, input_names=list(spec.input_names), output_names=list(spec.output_names),
                opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.debug("exported decoder (%s) to %s", spec, path)
    return path, spec


@contextlib.contextmanager
def _quiet(names: tuple[str, ...] = ("torch.onnx", "torch.export", "torch._dynamo")) -> Iterator[None]:
    """The exporters log every graph rewrite at INFO; keep that out of a user's log."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout may be vspipe's video stream
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
