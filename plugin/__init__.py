"""VapourSynth plugin layer (imported as `vs_keep.plugin`; this folder is mapped by setup.py).

    import vapoursynth as vs
    from vs_keep import keep
    clip = keep(clip)                       # official KEEP, all faces, chunks of 20, reset at scene changes

Everything VapourSynth-specific lives here; the engine (`vs_keep`) never imports vapoursynth.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["keep", "source"]

_DEVICES = ("cpu", "cuda")


def keep(
    clip: Any,
    weights: str | os.PathLike[str] | None = None,
    model: str = "keep",
    device: str | None = None,
    fp16: bool | None = None,
    faces: str = "all",
    chunk: int = 20,
    scene_reset: bool = True,
    num_streams: int = 1,
    upscale: int = 1,
    min_face: float = 20.0,
    detector: str = "mtcnn",
    fidelity: float = 0.5,
    parse: bool | str = False,
    exact: bool = False,
    antialias: bool = True,
    max_gap: int = 10,
    matrix_in_s: str | None = None,
    debug_props: bool = True,
    download: bool = True,
) -> Any:
    """Restore the faces of `clip` with KEEP (or CodeFormer per frame).

    clip: RGB24/RGBS/RGBH (other RGB depths are converted); YUV is converted to RGBS honouring `_Matrix`/`_Range`
        (or `matrix_in_s`) and back to the input format. Output: the input's format, `upscale` x the size, frame
        props copied, plus Keep* debug props (faces, track ids, landmarks, chunk start/end).
    weights: checkpoint file; default: the official file for `model` from the weights cache (downloaded on first
        use unless download=False).
    model: "keep" (temporal, chunks) or "codeformer" (per frame, `fidelity` = w).
    device: "cpu", "cuda" or "cuda:N"; default cuda when available. fp16: half precision on CUDA (default off).
    faces: "all", "largest" (official) or "center". min_face: smallest face (box side, px) restored.
    chunk: frames per KEEP clip; the recurrent state resets at every multiple of `chunk` and, with scene_reset, at
        every frame with `_SceneChangePrev` set. Output n depends only on n's chunk: seeking is exact.
    num_streams: chunks restored concurrently (CUDA streams); 1 on CPU.
    exact: official arithmetic (LMEDS alignment, plain bilinear resampling, uint8 rounding/truncation).
    """
    import vapoursynth as vs

    from .filter import _check_clip, _fail

    _check_clip(clip)
    if model not in ("keep", "codeformer"):
        raise _fail(f"model must be 'keep' or 'codeformer', got {model!r}")
    if faces not in ("all", "largest", "center"):
        raise _fail(f"faces must be 'all', 'largest' or 'center', got {faces!r}")
    for name, value, low in (("chunk", chunk, 1), ("num_streams", num_streams, 1), ("upscale", upscale, 1), ("max_gap", max_gap, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise _fail(f"{name} must be an integer >= {low}, got {value!r}")
    if num_streams > vs.core.num_threads:
        raise _fail(f"num_streams={num_streams} exceeds core.num_threads={vs.core.num_threads}; lower it")
    if not 0.0 <= float(fidelity) <= 1.0:
        raise _fail(f"fidelity must be in [0, 1], got {fidelity}")
    if min_face < 0:
        raise _fail(f"min_face must be >= 0, got {min_face}")
    if device is not None and not str(device).split(":")[0] in _DEVICES:
        raise _fail(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")

    engine = _make_engine(
        weights=weights, model=model, device=device, fp16=fp16, faces=faces, chunk=chunk, scene_reset=scene_reset,
        num_streams=num_streams, upscale=upscale, min_face=min_face, detector=detector, fidelity=fidelity,
        parse=parse, exact=exact, antialias=antialias, max_gap=max_gap, download=download,
    )
    from .filter import build_filter

    out = build_filter(clip, engine, debug_props=debug_props, matrix_in_s=matrix_in_s)
    _free_on_destroy(engine)
    return out


def _make_engine(*, weights, model, device, fp16, faces, chunk, scene_reset, num_streams, upscale, min_face, detector,
                 fidelity, parse, exact, antialias, max_gap, download):
    """Load everything up front (with fd 1 pointed at stderr): nothing loads lazily inside frame callbacks."""
    import torch

    from vs_keep.errors import VsKeepError
    from vs_keep.face import create_detector, restorer_factory
    from vs_keep.models import load
    from vs_keep.random_access import RandomAccessRestorer
    from vs_keep.stdio import stdout_to_stderr
    from vs_keep.weights import resolve

    from .filter import _fail

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise _fail(f"device={device!r} but CUDA is not available (torch {torch.__version__}); use device='cpu'")
    dtype = torch.float16 if (fp16 and device.startswith("cuda")) else torch.float32
    try:
        with stdout_to_stderr():
            path = resolve(weights or model, download=download)
            net = load(path, device=device, dtype=dtype)
            kind = getattr(net, "model_id", None)
            if kind != model:
                raise _fail(f"weights {path} hold a '{kind}' model, not '{model}' (set model='{kind}')")
            factory = restorer_factory(net, fidelity=fidelity)
            opts = {"min_face_size": max(12.0, float(min_face))} if detector == "mtcnn" else {}
            det = create_detector(detector, device, **opts)
            parser = None
            if parse:
                from vs_keep.face.facexlib_backend import ParseNetMasker

                parser = ParseNetMasker(weights=None if parse is True else parse, device=device)
    except VsKeepError as exc:
        raise _fail(str(exc)) from None
    return RandomAccessRestorer(
        restorer_factory=factory, detector=det, chunk=chunk, scene_reset=scene_reset, faces=faces,
        min_face_size=min_face, max_gap=max_gap, upscale=upscale, antialias=antialias, exact=exact, parser=parser,
        cache_chunks=max(3, num_streams + 2),
    )


def _free_on_destroy(engine) -> None:
    import vapoursynth as vs

    def free(engine=engine) -> None:  # default arg: module globals are gone when this runs
        engine.close()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    try:
        vs.register_on_destroy(free)
    except Exception:  # older VapourSynth without the hook: memory is freed with the process
        pass


def source(path: str | os.PathLike[str]) -> Any:
    """An RGB24 clip from a video file via PyAV (for setups without bs/lsmas/ffms2 source plugins)."""
    from .pyav_source import pyav_source

    return pyav_source(path)
