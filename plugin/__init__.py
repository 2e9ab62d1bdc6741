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
    tiny_faces: str | None = None,
    tiny_weights: str | os.PathLike[str] | None = None,
    tiny_min: float = 12.0,
    matrix_in_s: str | None = None,
    debug_props: bool = True,
    download: bool = True,
    decoder: str = "auto",
    cpu_fast: bool = True,
    cpu_precision: str = "fp32",
    overlap: int = 0,
    stabilize: float = 0.0,
    gray: bool | str = "auto",
    scene_detect: str = "auto",
    mask_out: bool = False,
    strength: float = 1.0,
    max_face: float | None = None,
    select: Any = None,
    bg_clip: Any = None,
) -> Any:
    """Restore the faces of `clip` with KEEP (or CodeFormer per frame).

    clip: any constant RGB, YUV or GRAY format (8-16 bit integer, half or float). The model sees the frame
        through `vs_keep.planes` (RGB24 for 8-bit sources, else RGBS; YUV honouring `_Matrix`/`_Range` or
        `matrix_in_s`), the composer `vs-keep restore` uses too (same options, same frames); the faces are merged
        back into the untouched source in its own format: every sample the paste alpha does not reach is the
        input's, bit for bit. Output: the input's format, `upscale` x the size, frame props copied, plus Keep*
        debug props (faces, track ids, landmarks, chunk start/end).
    gray: GRAY input is always restored on its luma (replicated to RGB) and comes back GRAY; "auto" also treats
        YUV/RGB whose chroma is flat (official `is_gray`, threshold 10, on the first, middle and last frame) that
        way and leaves its chroma untouched; True forces it, False never for colour formats.
    scene_detect: "auto": frames without `_SceneChangePrev` get it from a cut detector on frames n-1 and n
        (`vs_keep.scene`; props present win); "props": only the props; "off": no cuts (chunk starts only, as
        scene_reset=False). The values of `vs-keep restore --scene-detect` (which has no props, so no "props").
        Applies with scene_reset.
    mask_out: return the paste alpha instead of the restored clip: GRAYS, output size, 0 = source untouched,
        1 = restored face only (for MaskedMerge, grading or inspection); scaled by `strength`.
    strength: in [0, 1]: the restored face mixed with the original inside the paste alpha (the alpha times
        strength); 1 = fully restored, 0 = the input itself (without upscale or mask_out the model is not even
        loaded). Outside the faces the output is the input bit for bit whatever the strength.
    max_face: largest face (box side, px) restored, beside min_face; None = no limit.
    select: a mask clip (GRAY, the input's size and length): a face is restored only where its box centre lies on
        a non-zero sample of frame n's mask (faces are chosen per frame before tracking, so a track is restored on
        the frames the mask lets it through, with its state carried across them; an all-zero mask gives the input).
    bg_clip: with upscale > 1, the background at the output size (upscale x the input, same length and format,
        e.g. from vs-mlrt or vsrealesrgan) instead of a bilinear resize of the input; the faces go on top of it.
    weights: checkpoint file; default: the official file for `model` from the weights cache (downloaded on first
        use unless download=False).
    model: "keep" (temporal, chunks; KEEP v0.1.0 weights), "keep-v1" / "keep-asian" (KEEP v1.0.0's two files,
        same network) or "codeformer" (per frame, `fidelity` = w).
    device: "cpu", "cuda" or "cuda:N"; default cuda when available. fp16: CUDA only, 16-bit where the accuracy guard
        allows (generator and Kalman gains; the rest stays fp32); default off.
    decoder: KEEP's codebook decoder: "auto" (PyTorch, the measured default), or opt-in and unmeasured:
        "tensorrt" (CUDA; engine built once and cached). cpu_fast: CPU fp32 convolution rewrites (official
        parity kept); False runs the plain eager ops. The glibc allocator setting of `vs-keep restore` (~1.17x,
        process-wide) is opt-in here: VS_KEEP_TUNE_MALLOC=1 in the host's environment. cpu_precision: "fp32"
        (default, official parity) or "bf16" (opt-in, not bit-exact: KEEP's decoder in OpenVINO bf16; needs a CPU
        with AVX512-BF16 or AMX and `pip install openvino`, refused elsewhere).
    faces: "all", "largest" (official) or "center". min_face: smallest face (box side, px) restored by KEEP.
    chunk: frames per KEEP clip; the recurrent state resets at every multiple of `chunk` and, with scene_reset, at
        every frame with `_SceneChangePrev` set. Output n depends only on n's chunk: seeking is exact.
    overlap: frames before each chunk that KEEP steps through first to warm its state (outputs discarded; never
        across a scene start or the clip start): no cold restart, so no jump at chunk boundaries. Output n then
        depends on its chunk plus `overlap` frames; a seek costs chunk + overlap steps. 0 = official chunks.
    stabilize: low-band temporal stabilizer strength in [0, 1] (0 = off): the low band (tone, shading) of each
        restored face is averaged with the 4 previous faces of its track, warped by optical flow (DIS) with
        occlusion-aware weights; the high band (detail) is untouched. Primes runs by >= 4 frames. KEEP/CodeFormer.
    num_streams: chunks that may be in flight at once (the per-track recurrent state of num_streams + 2 chunks is
        kept); model runs are serialised per device. Detection, cropping and paste-back run in parallel on
        core.num_threads workers; no frame callback ever waits on another, so previewers may request any number
        of frames at once. A cold request (seek) costs the detections of its block's window and
        n - chunk_start + 1 model steps per face.
    exact: official arithmetic (LMEDS alignment, plain bilinear resampling, uint8 rounding of the face); the merge
        into the source rounds at the source's precision (the official uint8 truncation of the frame is not applied).
    tiny_faces: "dic" restores faces with a box side in [tiny_min, min_face) with DIC (x8, per frame; weights from
        `tiny_weights` or the cached `dic_celeba_x8`); their 68 landmarks go to the KeepTinyLandmarks prop.
    """
    import vapoursynth as vs

    from vs_keep.engine import EngineOptions, build_engine, validate
    from vs_keep.errors import VsKeepError
    from vs_keep.options import check_scene_detect
    from vs_keep.stdio import stdout_to_stderr

    from .filter import _check_clip, _fail, build_filter

    _check_clip(clip)
    if not isinstance(num_streams, int) or num_streams < 1:
        raise _fail(f"num_streams must be an integer >= 1, got {num_streams!r}")
    if num_streams > vs.core.num_threads:
        raise _fail(f"num_streams={num_streams} exceeds core.num_threads={vs.core.num_threads}; lower it")
    options = EngineOptions(
        weights=weights, model=model, device=device, fp16=bool(fp16), faces=faces, chunk=chunk,
        scene_reset=scene_reset, upscale=upscale, min_face=float(min_face), detector=detector, fidelity=fidelity,
        parse=parse, exact=exact, antialias=antialias, max_gap=max_gap, tiny_faces=tiny_faces,
        tiny_weights=tiny_weights, tiny_min=float(tiny_min), download=download, cache_chunks=max(3, num_streams + 2),
        decoder=decoder, cpu_fast=bool(cpu_fast), cpu_precision=cpu_precision, overlap=overlap, stabilize=stabilize,
        max_face=max_face, strength=strength, gray=gray,
    )
    try:  # the engine's errors (InputError, CheckpointError) become one `keep: ...` line
        check_scene_detect(scene_detect)
        validate(options)  # before anything loads; gray= too
        _check_companions(clip, upscale, select, bg_clip)
        if strength == 0 and upscale == 1 and not mask_out:
            return clip  # nothing of the faces would reach the output
        with stdout_to_stderr():  # load everything now, never lazily inside frame callbacks
            engine = build_engine(options)
        out = build_filter(clip, engine, debug_props=debug_props, matrix_in_s=matrix_in_s, gray=gray,
                           scene_detect=scene_detect, mask=bool(mask_out), strength=float(strength), select=select,
                           background=bg_clip)
    except VsKeepError as exc:
        raise _fail(str(exc)) from None
    _free_on_destroy(engine)
    return out


def _check_companions(clip: Any, upscale: int, select: Any, bg_clip: Any) -> None:
    """select= and bg_clip= must match the clip they go with (one `keep: ...` error naming the fix)."""
    import vapoursynth as vs

    from .filter import _fail

    if select is not None:
        if not isinstance(select, vs.VideoNode) or select.format is None or select.format.color_family != vs.GRAY:
            raise _fail("select must be a GRAY mask clip (e.g. core.std.BlankClip(clip, format=vs.GRAY8) drawn on, "
                        f"or clip.std.ShufflePlanes(0, vs.GRAY)), got {getattr(select, 'format', select)!r}")
        if (select.width, select.height, select.num_frames) != (clip.width, clip.height, clip.num_frames):
            raise _fail(f"select is {select.width}x{select.height}, {select.num_frames} frames; it must match the clip "
                        f"({clip.width}x{clip.height}, {clip.num_frames} frames): resize or trim the mask")
    if bg_clip is not None:
        if upscale == 1:
            raise _fail("bg_clip is the background of upscale > 1; set upscale=2 (or 4), or drop bg_clip")
        if not isinstance(bg_clip, vs.VideoNode) or bg_clip.format is None:
            raise _fail(f"bg_clip must be a clip of constant format, got {type(bg_clip).__name__}")
        want = (clip.width * upscale, clip.height * upscale, clip.num_frames)
        if (bg_clip.width, bg_clip.height, bg_clip.num_frames) != want:
            raise _fail(f"bg_clip is {bg_clip.width}x{bg_clip.height}, {bg_clip.num_frames} frames; with upscale={upscale} "
                        f"it must be {want[0]}x{want[1]}, {want[2]} frames (upscale x the clip, same length)")
        if bg_clip.format.id != clip.format.id:
            raise _fail(f"bg_clip is {bg_clip.format.name}, the clip {clip.format.name}: convert it, e.g. "
                        f"bg_clip.resize.Bicubic(format=vs.{clip.format.name}) (with the clip's matrix for YUV)")


def _free_on_destroy(engine) -> None:
    import torch
    import vapoursynth as vs

    def free(engine=engine, torch=torch) -> None:  # default args: module globals are gone when this runs
        engine.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    vs.register_on_destroy(free)  # R70+ (setup.py) always has it


def source(path: str | os.PathLike[str]) -> Any:
    """An RGB24 clip from a video file via PyAV (for setups without bs/lsmas/ffms2 source plugins)."""
    from .pyav_source import pyav_source

    return pyav_source(path)
