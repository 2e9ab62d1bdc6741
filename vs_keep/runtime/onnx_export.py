"""ONNX export of KEEP's codebook decoder and an onnxruntime runner with the torch decoder's call signature.

The ONNX file is the hand-off format for TensorRT (`runtime.trt`) and a CPU alternative (onnxruntime). Export uses
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
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import VsKeepError
from .reference_mode import reference_ops
from .decoder import CodebookDecoder, DecoderSpec, decoder_spec

log = logging.getLogger(__name__)

__all__ = ["OrtDecoder", "export_decoder_onnx", "model_hash"]

OPSET = 17


def model_hash(model: nn.Module, length: int = 16) -> str:
    """sha256 of the model's state dict (names, shapes, dtypes, values): identifies weights for engine caches."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def export_decoder_onnx(model: nn.Module, path: str | os.PathLike[str], *, batch: int = 1) -> tuple[Path, DecoderSpec]:
    """Write the decoder graph of `model` (fp32, on CPU) to `path`; returns (path, spec). Atomic (temp + rename)."""
    spec = decoder_spec(model, batch)
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
        with warnings.catch_warnings(), torch.inference_mode(), reference_ops(), _quiet():
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


def session_options(threads: int | None) -> Any:
    """onnxruntime options for sharing the CPU with torch: full graph optimisation, and no spin-waiting of idle
    intra-op threads after a run (they would steal the cores from the torch stages that follow)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


class OrtDecoder:
    """Runs an exported decoder with onnxruntime; callable like `decoder.torch_decoder(model)`."""

    def __init__(self, path: str | os.PathLike[str], spec: DecoderSpec, *, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        import onnxruntime as ort  # lazy: optional dependency

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=list(providers))
        self.spec = spec

    def feeds(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> dict[str, np.ndarray]:
        s = self.spec
        out: dict[str, Any] = {"idx": idx.detach().to("cpu", torch.int64).numpy()}
        for r, _ in s.feats:
            out[f"enc_{r}"] = feats[r].detach().float().cpu().numpy()
        for r, c in s.memory:
            out[f"mem_{r}"] = memory[r].detach().float().cpu().numpy() if memory else np.zeros((s.batch, c, r, r), np.float32)
        out["has_memory"] = np.array([1.0 if memory else 0.0], np.float32)
        return out

    def __call__(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> tuple[Tensor, dict[int, Tensor]]:
        results = self.session.run(list(self.spec.output_names), self.feeds(idx, feats, memory))
        device = idx.device
        out = torch.from_numpy(results[0]).to(device)
        new_memory = {r: torch.from_numpy(t).to(device) for (r, _), t in zip(self.spec.memory, results[1:])}
        return out, new_memory


# ---- GMFlow ----------------------------------------------------------------------------------------------------


def _smooth_pair(size: int | tuple[int, int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two frames (1, 3, H, W) in [-1, 1]: smooth noise and a copy shifted by (3, 2) px (a plausible flow)."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g) * 2 - 1
    big = torch.nn.functional.interpolate(base, size=(h + 16, w + 16), mode="bicubic", align_corners=False).clamp(-1, 1)
    return big[..., 8 : 8 + h, 8 : 8 + w].contiguous(), big[..., 6 : 6 + h, 5 : 5 + w].contiguous()


@contextlib.contextmanager
def _quiet(names: tuple[str, ...] = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")) -> Iterator[None]:
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


def export_flow_onnx(flownet: nn.Module, path: str | os.PathLike[str], *, size: int | tuple[int, int], verify: bool = True) -> Path:
    """Write KEEP's flow net (`model.flownet`, fp32 CPU) for one pair of frames of `size` (side or (H, W)) to `path`.

    Uses the torch.export-based exporter (needs `onnxscript`): GMFlow adds its shift mask in place through a view,
    which the TorchScript exporter silently drops (flows off by hundreds of pixels). With `verify`, the file is
    checked against torch on a smooth shifted pair before it is moved into place.
    """
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise VsKeepError("exporting the flow net needs onnxscript (pip install onnxscript)") from exc
    cur, prev = _smooth_pair(size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad(), reference_ops(), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                flownet.eval(), (cur, prev), input_names=["cur", "prev"], output_names=["flow"], opset_version=18,
                dynamo=True, external_data=False, verbose=False,
            )
            program.save(str(tmp))
        if verify:
            with torch.inference_mode():
                ref = flownet(cur, prev).numpy()
            got = OrtFlow(tmp).session.run(["flow"], {"cur": cur.numpy(), "prev": prev.numpy()})[0]
            err = np.abs(got - ref)
            if not (err.mean() < 0.05 and err.max() < 2.0):
                raise VsKeepError(f"exported flow net disagrees with torch (mean {err.mean():.3g} px, max {err.max():.3g} px); not used")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class OrtFlow:
    """onnxruntime flow for frame pairs: `(cur (N,3,S,S), prev (N,3,S,S)) -> flow (N,2,S,S)`, one pair per run."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])

    def __call__(self, cur: Tensor, prev: Tensor) -> Tensor:
        outs = []
        for i in range(cur.shape[0]):
            feeds = {"cur": cur[i : i + 1].detach().float().cpu().numpy(), "prev": prev[i : i + 1].detach().float().cpu().numpy()}
            outs.append(torch.from_numpy(self.session.run(["flow"], feeds)[0]))
        return torch.cat(outs).to(cur.device)


def cached_flow_onnx(flownet: nn.Module, shape: tuple[int, int], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The verified flow-net ONNX file for frames of `shape` (H, W), exported once into the cache dir."""
    from .trt import cache_root

    path = cache_root(cache_dir) / "onnx" / f"flow-{model_hash(flownet)}-{shape[0]}x{shape[1]}.onnx"
    if not path.exists():
        log.info("exporting the flow net for %dx%d frames to %s (once)", shape[0], shape[1], path)
        export_flow_onnx(flownet, path, size=shape)
    return path
