"""One place that turns user options into a ready `FaceEngine` (shared by the CLI and the VapourSynth
filter, so both restore a video identically)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import nn

from .errors import InputError
from .numerics import numerics_identity
from .options import check_gray
from .face_engine import FaceEngine
from .weights import RESTORERS

__all__ = [
    "DECODERS", "TUNE_MALLOC_ENV", "AutocastFactory", "EngineOptions", "build_engine", "cudnn_tf32_off",
    "load_model", "pick_device", "validate",
]

log = logging.getLogger(__name__)

#: codebook decoder runtimes for KEEP ("auto": the measured default, eager torch; TensorRT is opt-in: never measured
#: on a GPU here, and TensorRT fp16 engines of StyleGAN-like decoders can give solid colour)
DECODERS = ("auto", "torch", "tensorrt")


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides how frames are restored (see `vs_keep.keep` for the meaning of each field)."""

    weights: str | os.PathLike[str] | None = None
    model: str = "keep"
    device: str | None = None
    fp16: bool = False
    faces: str = "all"
    chunk: int = 20
    scene_reset: bool = True
    upscale: int = 1
    min_face: float = 20.0
    detector: str = "mtcnn"
    fidelity: float = 0.5
    parse: bool | str | os.PathLike[str] = False
    exact: bool = False
    antialias: bool = True
    max_gap: int = 10
    tiny_faces: str | None = None
    tiny_weights: str | os.PathLike[str] | None = None
    tiny_min: float = 12.0
    download: bool = True
    cache_chunks: int = 3
    decoder: str = "auto"
    #: CPU: fp32 convolution rewrites (`vs_keep.runtime.cpu`; parity kept); False = reference ops
    cpu_fast: bool = True
    #: CPU: "fp32" (parity) or "bf16" (opt-in, not bit-exact: KEEP's decoder in OpenVINO bf16 on CPUs with
    #: AVX512-BF16/AMX; refused elsewhere; see vs_keep.runtime.openvino)
    cpu_precision: str = "fp32"
    #: CPU: glibc keeps freed activation memory for reuse (`runtime.cpu.tune_malloc`). Process-wide, so opt-in: the
    #: `vs-keep` CLI turns it on for its own process; in a host such as vspipe set it (or `VS_KEEP_TUNE_MALLOC=1`)
    #: only when vs-keep owns the process
    tune_malloc: bool = False
    #: frames before each chunk that prime KEEP's state (outputs discarded); 0 = official chunks
    overlap: int = 0
    #: low-band temporal stabilizer strength in [0, 1] (`vs_keep.face.stabilize`); 0 = off
    stabilize: float = 0.0
    #: largest face (box side, px) restored; None = no limit
    max_face: float | None = None
    #: the restored faces' weight inside the paste alpha, in [0, 1] (`vs_keep.planes.merge_faces`)
    strength: float = 1.0
    #: "auto" (flat chroma on the first, middle and last frame: `vs_keep.planes.looks_gray`), True or False
    gray: bool | str = "auto"
    #: `vs-keep restore --select-mask`: an image or video of masks (`vs_keep.select_mask`); the filter's select=
    #: clip reaches the detection stage as frames instead
    select_mask: str | os.PathLike[str] | None = None


def pick_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but CUDA is not available (torch {torch.__version__}); use device='cpu'")
    if str(device).split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return str(device)


def validate(o: EngineOptions) -> None:
    """Every engine option, checked once, before anything loads (the filter and the CLI both build through here)."""
    from .face.plan import check_restore_layout

    if o.model not in RESTORERS:
        raise InputError(f"model must be one of {', '.join(RESTORERS)}, got {o.model!r}")
    check_restore_layout(o.faces, o.chunk, o.upscale)
    if not isinstance(o.max_gap, int) or isinstance(o.max_gap, bool) or o.max_gap < 0:
        raise InputError(f"max_gap must be an integer >= 0, got {o.max_gap!r}")
    if not 0.0 <= float(o.fidelity) <= 1.0:
        raise InputError(f"fidelity must be in [0, 1], got {o.fidelity}")
    if o.min_face < 0:
        raise InputError(f"min_face must be >= 0, got {o.min_face}")
    if o.max_face is not None and (not _is_number(o.max_face) or o.max_face < max(o.min_face, 1.0)):
        raise InputError(f"max_face must be a box side in px >= min_face={o.min_face:g} (or None for no limit), got {o.max_face!r}")
    if not _is_number(o.strength) or not 0.0 <= float(o.strength) <= 1.0:
        raise InputError(f"strength must be a number in [0, 1] (1 = restored faces, 0 = the input), got {o.strength!r}")
    check_gray(o.gray)
    if o.decoder not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, got {o.decoder!r}")
    if o.decoder == "tensorrt" and RESTORERS[o.model] != "keep":
        raise InputError(f"decoder={o.decoder!r} runs KEEP's codebook decoder; use decoder='auto' with model={o.model!r}")
    if o.cpu_precision not in ("fp32", "bf16"):
        raise InputError(f"cpu_precision must be 'fp32' or 'bf16', got {o.cpu_precision!r}")
    if o.cpu_precision == "bf16" and (RESTORERS[o.model] != "keep" or o.decoder != "auto"):
        raise InputError(f"cpu_precision='bf16' runs KEEP's codebook decoder in OpenVINO; it needs model='keep' and "
                         f"decoder='auto' (got model={o.model!r}, decoder={o.decoder!r})")
    if o.tiny_faces not in (None, "dic"):
        raise InputError(f"tiny_faces must be None or 'dic', got {o.tiny_faces!r}")
    from .face.overlap import check_overlap
    from .face.plan import check_tiny_min
    from .face.stabilize import check_stabilize

    check_overlap(o.overlap)
    check_stabilize(o.stabilize)
    if o.tiny_faces:
        check_tiny_min(o.tiny_min, o.min_face)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


AutocastFactory = Callable[[], ContextManager[Any]]


def load_model(o: EngineOptions) -> tuple[nn.Module, AutocastFactory]:
    """Load the KEEP/CodeFormer weights and prepare them for the device: what every entry point runs.

    Returns the model and the autocast context to run it under. CPU: fp32 with the CPU rewrites (`cpu_fast`).
    CUDA: fp32, or with `fp16` the precision policy of `vs_keep.runtime.precision` (autocast with fp32 islands for
    the stages whose codebook indices break in 16 bits); KEEP's decoder per `decoder`.
    """
    from .models import load, model_info
    from .runtime.backends import TorchBackend
    from .weights import resolve

    validate(o)
    device = pick_device(o.device)
    precision = "fp16" if (o.fp16 and device.startswith("cuda")) else "fp32"
    if o.fp16 and precision == "fp32":
        log.info("fp16 applies to CUDA only; running fp32 on %s", device)
    if o.cpu_precision == "bf16":
        if device == "cpu":
            from .runtime.openvino import check_bf16_cpu

            check_bf16_cpu()  # before loading: refuse early, naming the parameter
        else:
            log.info("cpu_precision applies to CPU only; running %s on %s", precision, device)
    path = resolve(o.weights or o.model, download=o.download)
    net = load(path, device=device, dtype=torch.float32)
    kind = model_info(net).kind
    if kind != RESTORERS[o.model]:
        raise InputError(f"weights {path} hold a '{kind}' model, not '{RESTORERS[o.model]}' (set model='{kind}')")
    backend = TorchBackend(device=device, precision=precision, cpu_fast=o.cpu_fast)
    net = backend.prepare(net)
    if device == "cpu" and (o.tune_malloc or os.environ.get(TUNE_MALLOC_ENV, "") == "1"):
        from .runtime.cpu import tune_malloc

        # measured under vspipe (full KEEP, 2 faces, 640x480): 1.17x faster, peak RSS +11 %; flat over length
        if tune_malloc(True):
            log.info("glibc allocator tuned for reuse of activation memory (process-wide)")
    cpu_bf16 = o.cpu_precision == "bf16" and device == "cpu"
    if kind == "keep":
        _install_decoder(net, o.decoder, device, precision, cpu_bf16=cpu_bf16)
    log.debug("numerics: %s", numerics_identity(device, "fp32+bf16-decoder" if cpu_bf16 else precision, cpu_fast=o.cpu_fast))
    autocast: AutocastFactory = backend.autocast if precision != "fp32" else contextlib.nullcontext
    if device.startswith("cuda") and precision == "fp32":
        # cuDNN convolutions default to TF32 (fp16's 10-bit mantissa), at which the encoders flip codebook indices:
        # off for the duration of our own model calls only, so other filters in the process keep their setting
        autocast = cudnn_tf32_off
    return net, autocast


#: opt-in for the glibc allocator setting in a host process (see EngineOptions.tune_malloc)
TUNE_MALLOC_ENV = "VS_KEEP_TUNE_MALLOC"

_tf32_lock = threading.Lock()
_tf32_depth = 0
_tf32_saved = True


@contextlib.contextmanager
def cudnn_tf32_off() -> Iterator[None]:
    """`torch.backends.cudnn.allow_tf32 = False` while any of our model calls runs; the caller's value comes back
    when the last one leaves. The flag itself is process-wide in torch, so a convolution another filter runs
    concurrently with ours also runs without TF32 (more precise, not less); nothing outlives our calls."""
    global _tf32_depth, _tf32_saved
    with _tf32_lock:
        if _tf32_depth == 0:
            _tf32_saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
        _tf32_depth += 1
    try:
        yield
    finally:
        with _tf32_lock:
            _tf32_depth -= 1
            if _tf32_depth == 0:
                torch.backends.cudnn.allow_tf32 = _tf32_saved


def _install_decoder(net: nn.Module, decoder: str, device: str, precision: str, *, cpu_bf16: bool = False) -> None:
    """Hand KEEP's codebook decoder to OpenVINO bf16 (`cpu_bf16`: cpu_precision="bf16" on CPU) or to TensorRT when
    asked by name; `auto` keeps eager torch."""
    from .runtime.backends import OpenVinoBackend, TensorRTBackend

    if cpu_bf16:
        net.set_decoder(OpenVinoBackend(precision="bf16").decoder(net))
    elif decoder == "tensorrt":
        if not device.startswith("cuda"):
            raise InputError("decoder='tensorrt' needs CUDA; use device='cuda', or decoder='auto' on CPU")
        net.set_decoder(TensorRTBackend(device_id=torch.device(device).index or 0, precision=precision).decoder(net))


def build_engine(o: EngineOptions) -> FaceEngine:
    """Load the restorer (and DIC, ParseNet when asked) and the detector, up front."""
    from .face import create_detector, restorer_factory
    from .kernels.select import frame_device
    from .models import load
    from .weights import resolve

    net, autocast = load_model(o)
    device = pick_device(o.device)
    factory = restorer_factory(net, fidelity=o.fidelity, autocast=autocast)
    tiny = None
    if o.tiny_faces:
        from .face.tiny import TinyFaceRestorer

        dic = load(resolve(o.tiny_weights or "dic_celeba_x8", download=o.download), device=device)
        tiny = TinyFaceRestorer(dic)
    low = o.tiny_min if tiny is not None else o.min_face
    det_opts = {"min_face_size": max(12.0, float(low))} if o.detector == "mtcnn" else {}
    detector = create_detector(o.detector, device, **det_opts)
    parser = None
    if o.parse:
        from .face.facexlib_backend import ParseNetMasker

        parser = ParseNetMasker(weights=None if o.parse is True else o.parse, device=device)
    select = None
    if o.select_mask is not None:
        from .select_mask import MaskFrames

        select = MaskFrames(o.select_mask)
    return FaceEngine(
        restorer_factory=factory, detector=detector, chunk=o.chunk, scene_reset=o.scene_reset, faces=o.faces,
        min_face_size=o.min_face, max_gap=o.max_gap, upscale=o.upscale, antialias=o.antialias, exact=o.exact,
        parser=parser, cache_chunks=o.cache_chunks, tiny=tiny, tiny_min=o.tiny_min, device=device,
        frame_device=frame_device(device), overlap=o.overlap, stabilize=o.stabilize,
        max_face_size=None if o.max_face is None else float(o.max_face), select=select,
    )
