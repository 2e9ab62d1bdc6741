"""KEEP's test-set degradation, x = [(y * k_sigma) down4 + n_delta]_codec up4 (KEEP supplementary, eq. 9).

Levels follow supplementary Table A1. One Gaussian kernel per clip, a fresh noise field per frame (same delta),
libx264 at a CRF drawn per clip. The codec runs inside the stream: each compressed packet is decoded and
upscaled as soon as it leaves the encoder, so memory does not grow with clip length.

Determinism: every random draw comes from numpy generators seeded by `seed`; x264 runs with one thread and the
bit-exact flag, so one seed gives byte-identical output on one machine/FFmpeg build, under any load.

Departures (documented): the blur kernel is sized to +-4 sigma instead of BasicSR's fixed 21 taps, so the blur
really has the drawn sigma (a 21-tap kernel cut at sigma 10 would act like sigma ~5.5). x264 runs without its
macroblock tree (`mbtree=0`, which only moves bits between frames at the same CRF): with it, libx264 read
uninitialised heap memory on these frame sizes and the bitstream of one seed changed with whatever the process had
freed before (issue 24; shown by filling fresh allocations with different bytes through glibc's M_PERTURB: other
bytes with the tree, the same without it, on every clip tried).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

__all__ = [
    "DOWNSAMPLE_MODES", "DegradeParams", "LEVELS", "SCALE", "blur", "degrade_file", "degrade_frames", "degrade_lr",
    "params_json_path", "sample_params",
]

log = logging.getLogger(__name__)

# Supplementary Table A1: noise delta (8-bit units), blur sigma (px, at full resolution), CRF (inclusive).
LEVELS: dict[str, dict[str, tuple[float, float]]] = {
    "mild": {"noise": (0.0, 5.0), "blur": (2.0, 5.0), "crf": (18, 25)},
    "medium": {"noise": (5.0, 10.0), "blur": (5.0, 10.0), "crf": (25, 35)},
    "heavy": {"noise": (5.0, 10.0), "blur": (5.0, 10.0), "crf": (35, 45)},
}
DOWNSAMPLE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
SCALE = 4


@dataclass(frozen=True)
class DegradeParams:
    """Everything needed to reproduce one degraded clip; written next to the output as JSON."""

    level: str
    seed: int
    sigma: float
    delta: float
    crf: int
    downsample: str
    scale: int = SCALE
    upsample: str = "bicubic"
    codec: str = "libx264"
    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    kernel_radius: int = 0
    ranges: dict = field(default_factory=dict)


def sample_params(level: str, seed: int, *, downsample: str = "random", preset: str = "medium") -> DegradeParams:
    """Draw one clip's blur sigma, noise delta, CRF and (if "random") downsampling filter from the level's ranges."""
    if level not in LEVELS:
        raise InputError(f"level={level!r}: use one of {', '.join(LEVELS)}")
    if downsample != "random" and downsample not in DOWNSAMPLE_MODES:
        raise InputError(f"downsample={downsample!r}: use random or one of {', '.join(DOWNSAMPLE_MODES)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    ranges = LEVELS[level]
    sigma = float(rng.uniform(*ranges["blur"]))
    delta = float(rng.uniform(*ranges["noise"]))
    crf = int(rng.integers(ranges["crf"][0], ranges["crf"][1] + 1))
    mode = downsample if downsample != "random" else str(rng.choice(sorted(DOWNSAMPLE_MODES)))
    return DegradeParams(
        level=level, seed=int(seed), sigma=sigma, delta=delta, crf=crf, downsample=mode, preset=preset,
        kernel_radius=int(math.ceil(4.0 * sigma)), ranges={k: list(v) for k, v in ranges.items()},
    )


def blur(frame: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Isotropic Gaussian blur of an HxWxC float32 image, taps to +-radius (the 2-D kernel is the outer product of
    normalised 1-D taps, applied separably), reflect-101 borders as cv2.filter2D in BasicSR."""
    k = cv2.getGaussianKernel(2 * radius + 1, sigma, ktype=cv2.CV_32F)
    return cv2.sepFilter2D(frame, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)


def degrade_lr(frame: np.ndarray, params: DegradeParams, noise_rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Blur, downsample and add this frame's noise; returns the LR uint8 frame and the noise field's actual std."""
    h, w = frame.shape[:2]
    blurred = blur(frame.astype(np.float32), params.sigma, params.kernel_radius)
    lr = cv2.resize(blurred, (w // params.scale, h // params.scale), interpolation=DOWNSAMPLE_MODES[params.downsample])
    noise = noise_rng.normal(0.0, params.delta, size=lr.shape).astype(np.float32)
    return np.clip(np.rint(lr + noise), 0, 255).astype(np.uint8), float(noise.std())


class _CodecLoop:
    """libx264 encoder feeding an H.264 decoder packet by packet (the codec step of the degradation)."""

    def __init__(self, params: DegradeParams, width: int, height: int, fps: Fraction, lr_sink) -> None:
        import av

        self.width, self.height = width, height
        # yuv420p needs even sizes: pad by edge replication, crop after decoding.
        self.pad_w, self.pad_h = width + (width & 1), height + (height & 1)
        enc = av.CodecContext.create(params.codec, "w")
        enc.width, enc.height, enc.pix_fmt = self.pad_w, self.pad_h, params.pix_fmt
        enc.time_base = Fraction(1) / fps
        enc.framerate = fps
        enc.thread_count = 1
        enc.flags |= av.codec.context.Flags.bitexact.value
        # mbtree=0: libx264's macroblock tree reads uninitialised memory here (small frames), so with it one seed
        # gave other bytes from run to run (issue 24); see the module docstring
        enc.options = {"crf": str(params.crf), "preset": params.preset, "threads": "1", "x264-params": "mbtree=0"}
        self.enc = enc
        self.dec = av.CodecContext.create("h264", "r")
        self.dec.thread_count = 1
        self.lr_sink = lr_sink
        self.index = 0

    def push(self, lr: np.ndarray | None) -> Iterator[np.ndarray]:
        """Encode one LR frame (None flushes) and yield whatever decoded LR frames come out, in display order."""
        import av

        if lr is None:
            packets = [*self.enc.encode(None), None]  # the trailing None flushes the decoder
        else:  # one size per clip: `degrade_frames` checks each frame
            if (self.pad_w, self.pad_h) != (self.width, self.height):
                lr = np.pad(lr, ((0, self.pad_h - self.height), (0, self.pad_w - self.width), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(lr), format="rgb24").reformat(format="yuv420p")
            vf.pts = self.index
            self.index += 1
            packets = self.enc.encode(vf)
        for packet in packets:
            if packet is not None and self.lr_sink is not None:
                self.lr_sink.write(bytes(packet))
            for frame in self.dec.decode(packet):
                yield frame.to_ndarray(format="rgb24")[: self.height, : self.width]


def degrade_frames(
    frames: Iterable[np.ndarray], params: DegradeParams, *, fps: Fraction, upscale: bool = True,
    lr_sink=None, stats: dict | None = None,
) -> Iterator[np.ndarray]:
    """Degrade a stream of RGB uint8 frames; yields output frames (same size as input if `upscale`)."""
    noise_rng = np.random.default_rng(np.random.SeedSequence([params.seed, 1]))
    loop: _CodecLoop | None = None
    size = None
    noise_stds: list[float] = []

    def finish(lr_out: np.ndarray) -> np.ndarray:
        return cv2.resize(lr_out, size, interpolation=cv2.INTER_CUBIC) if upscale else lr_out

    for frame in frames:
        if size is None:
            h, w = frame.shape[:2]
            if h < 2 * params.scale or w < 2 * params.scale:
                raise InputError(f"input is {w}x{h}: degradation needs at least {2 * params.scale} px per side")
            size = (w, h)
            loop = _CodecLoop(params, w // params.scale, h // params.scale, fps, lr_sink)
        elif frame.shape[1::-1] != size:
            raise InputError(f"frame {len(noise_stds)} is {frame.shape[1]}x{frame.shape[0]}, not {size[0]}x{size[1]}")
        lr, noise_std = degrade_lr(frame, params, noise_rng)
        noise_stds.append(noise_std)
        for out in loop.push(lr):
            yield finish(out)
    if loop is None:
        raise InputError("input has no frames")
    for out in loop.push(None):
        yield finish(out)
    if stats is not None:
        stats["frames"] = len(noise_stds)
        stats["noise_std_measured"] = float(np.mean(noise_stds))
        stats["width"], stats["height"] = size
        stats["lr_width"], stats["lr_height"] = loop.width, loop.height


def degrade_file(
    src: str | Path, dst: str | Path, *, level: str, seed: int = 0, downsample: str = "random",
    preset: str = "medium", upscale: bool = True, save_lr: str | Path | None = None,
    progress: bool = True, max_frames: int | None = None,
) -> dict:
    """Degrade a video or frame folder into `dst` and write `<dst>.json` with the parameters; returns that dict."""
    import json

    from tqdm import tqdm

    from ..video import FrameSink, iter_frames, probe

    info = probe(src)
    params = sample_params(level, seed, downsample=downsample, preset=preset)
    dst = Path(dst)
    stats: dict = {}
    total = min(info.frames, max_frames) if (info.frames and max_frames) else (info.frames or max_frames)
    frames = iter_frames(src, max_frames=max_frames)
    with (open(save_lr, "wb") if save_lr else contextlib.nullcontext()) as lr_file, \
            FrameSink(dst, fps=info.fps, lossless=True) as writer:
        stream = degrade_frames(frames, params, fps=info.fps, upscale=upscale, lr_sink=lr_file, stats=stats)
        for out in tqdm(stream, total=total, desc=f"degrade {level}", unit="f", disable=not progress, leave=False):
            writer.write(out)
    record = {
        **asdict(params), **stats, "fps": str(info.fps), "upscaled": upscale, "source": str(src),
        "output": str(dst), "lr_stream": str(save_lr) if save_lr else None,
        "model": "x = [(y * k_sigma) down4 + n_delta]_codec up4 (KEEP suppl. eq. 9, Table A1)",
    }
    params_path = params_json_path(dst)
    params_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.debug("degraded %d frames (sigma %.2f, delta %.2f, CRF %d) -> %s", stats["frames"], params.sigma,
             params.delta, params.crf, dst)
    return record


def params_json_path(dst: str | Path) -> Path:
    """Where the parameters of a degraded output live: `OUT.json` beside a file, `OUT/../OUT.json` for a folder."""
    dst = Path(dst)
    return dst.with_name(dst.name + ".json")
