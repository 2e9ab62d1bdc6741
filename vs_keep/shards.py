"""Restore one video in shards (frame ranges), one after another or as Ray tasks, with the frames of one process.

Output frame n depends only on a bounded window of input frames (`vs_keep.sequencer`). So a video cut at multiples
of `chunk` can be restored in pieces: shard [a, b) decodes frames [lo, hi) = `Sequencer.input_window(a, b)`
(frame-accurate seek to lo; the window includes the priming runs of `overlap=`/`stabilize=`), renders frames
a..b-1 with the linear pass `vs_keep.stream.restore_stream` over that window (from empty caches), merges the
faces into the decoded frames in their own pixel format (`vs_keep.pixels.compose`, as `vs-keep restore` does; source timestamps, colour
tags and pixel format kept) and encodes them as one segment. Scene cuts come from `vs_keep.scene.is_cut` on
consecutive frames, as in the single run (a shard decodes one frame before its window for the flag of its first
frame). The driver then concatenates the segments by stream copy and muxes the input's audio and subtitles. With a lossless codec the
decoded output equals the single-process output bit for bit; with a lossy codec each segment is encoded on its
own (an extra keyframe and a fresh rate control at each seam, see the README).

Each worker process loads the weights once (`_engine_for` keeps the last engine); a Ray worker that dies mid-shard
is replaced and the shard rerun from its start (`max_retries`), writing its segment under a new temporary name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .atomic import replace_file
from .engine import EngineOptions
from .errors import InputError, VsKeepError
from .sequencer import Sequencer

log = logging.getLogger(__name__)

MAX_RETRIES = 3


__all__ = ["Encoding", "Shard", "ShardError", "ShardJob", "ShardResult", "concat_segments", "plan_shards",
           "restore_sharded", "run_shard", "sequencer_of", "shard_of"]

class ShardError(VsKeepError, RuntimeError):
    """A shard could not be completed (its worker kept failing)."""


Report = Callable[[int, int], None]  # (shard index, frames done in this attempt)


@dataclass(frozen=True)
class Shard:
    """Output frames [start, stop); input frames [lo, hi) decoded for them (the detection context)."""

    index: int
    start: int
    stop: int
    lo: int
    hi: int


def plan_shards(total: int, count: int, sequencer: Sequencer) -> list[Shard]:
    """Cut frames [0, total) into at most `count` ranges of whole chunks, as even as possible, each with the input
    window its frames read."""
    if count < 1:
        raise InputError(f"--shards must be >= 1, got {count}")
    if total < 1:
        raise InputError("the input has no frames")
    chunk = sequencer.chunk
    chunks = math.ceil(total / chunk)
    count = min(count, chunks)
    edges = [min(round(i * chunks / count) * chunk, total) for i in range(count + 1)]
    return [shard_of(i, a, b, total, sequencer) for i, (a, b) in enumerate(zip(edges, edges[1:]))]


def shard_of(index: int, start: int, stop: int, total: int, sequencer: Sequencer) -> Shard:
    """Output frames [start, stop) (whole chunks) with the input frames their plan needs (`Sequencer.input_window`:
    detection context and priming), clipped to the clip."""
    lo, hi = sequencer.input_window(start, stop, total)
    return Shard(index=index, start=start, stop=stop, lo=lo, hi=hi)


def sequencer_of(options: EngineOptions) -> Sequencer:
    """The frame windows of the engine `build_engine(options)` makes (`run_shard` checks that they agree)."""
    return Sequencer.of(chunk=options.chunk, overlap=options.overlap, stabilize=options.stabilize,
                        scene_reset=options.scene_reset, max_gap=options.max_gap)


@dataclass(frozen=True)
class Encoding:
    """How every segment is encoded (what `FrameSink` takes)."""

    fps: Fraction
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None  # None: the input's (as `vs-keep restore`)


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs for one shard (picklable; paths must be reachable from the worker)."""

    input: str
    segment: str
    shard: Shard
    total: int
    lo_pts: int
    options: EngineOptions
    encoding: Encoding
    like: object | None = None  # the input's video.StreamFormat (None for image folders: RGB frames as before)
    first: int | None = None  # first decoded frame: lo, or lo - 1 for the scene flag of lo (lo_pts is its pts)
    #: torch intra-op threads of the planning run: float32 results depend on it, so every worker pins torch to it
    threads: int | None = None


@dataclass(frozen=True)
class ShardResult:
    index: int
    frames: int
    seconds: float
    load_seconds: float  # building the engine (0 when this process had it already)
    context_frames: int  # frames decoded and detected only as context for the shard's first/last chunks
    context_decode_seconds: float  # decode time spent on them
    pid: int


_ENGINE: tuple[object, object] | None = None  # (key, RandomAccessRestorer): one per process


def _engine_for(options: EngineOptions, source: str):
    """The engine for these options, built once per process. Its caches are keyed by frame number, so a new input
    file (or a changed one) gets a new engine."""
    global _ENGINE
    from .engine import build_engine

    st = os.stat(source)
    key = (options, torch.get_num_threads(), os.path.abspath(source), st.st_size, st.st_mtime_ns)
    if _ENGINE is not None and _ENGINE[0] == key:
        return _ENGINE[1], 0.0
    if _ENGINE is not None:
        _ENGINE[1].close()
        _ENGINE = None
    t = time.perf_counter()
    engine = build_engine(options)
    _ENGINE = (key, engine)
    return engine, time.perf_counter() - t


def run_shard(job: ShardJob, report: Report | None = None) -> ShardResult:
    """Restore and encode one shard into `job.segment` (written under a temporary name, renamed when complete)."""
    from .pixels import compose, to_rgb
    from .scene import is_cut
    from .stream import restore_stream
    from .video import FrameSink, decode, iter_frames

    t0 = time.perf_counter()
    if job.threads is not None and torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)  # before the engine is built: it keeps the count of its builder
    engine, load_s = _engine_for(job.options, job.input)
    engine.clear_caches()  # a shard reads its own window only, never what an earlier shard in this process cached
    s = job.shard
    if engine.sequencer.input_window(s.start, s.stop, job.total) != (s.lo, s.hi):
        raise ShardError(f"shard {s.index}: planned window [{s.lo}, {s.hi}) is not the engine's (a bug in shards.py)")
    first = s.lo if job.first is None else job.first
    decoded: dict[int, object] = {}  # the shard's decoded frames (own pixel format) until their output is written
    decode_seconds: dict[int, float] = {}  # time spent waiting for each decoded frame

    def video_frames() -> Iterable[np.ndarray]:
        for i, frame in enumerate(decode(job.input, start=first, start_pts=job.lo_pts, max_frames=s.hi - first)):
            if first + i >= s.start:
                decoded[first + i] = frame
            yield to_rgb(frame, job.options.gray is True)

    def timed(frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        it, m = iter(frames), first
        while True:
            t = time.perf_counter()
            img = next(it, None)
            if img is None:
                return
            decode_seconds[m] = time.perf_counter() - t
            m += 1
            yield img

    if job.like is not None:
        frames = video_frames()
    else:
        frames = iter_frames(job.input, start=first, start_pts=job.lo_pts, max_frames=s.hi - first)
    scene = is_cut if job.options.scene_reset else None
    seg = Path(job.segment)
    tmp = seg.with_name(f"{seg.stem}.{uuid.uuid4().hex[:8]}.partial{seg.suffix}")
    e = job.encoding
    layer = job.like is not None
    try:
        with FrameSink(tmp, fps=e.fps, codec=e.codec, crf=e.crf, preset=e.preset, like=job.like, pix_fmt=e.pix_fmt) as sink:
            results = restore_stream(engine, timed(frames), job.total, layer=layer, scene=scene, start=s.start,
                                     stop=s.stop, first=first)
            for n, result in enumerate(results, s.start):
                if layer:
                    sink.write_frame(compose(decoded.pop(n), result.image, result.alpha, gray=job.options.gray is True,
                                             strength=job.options.strength, upscale=engine.upscale))
                else:
                    sink.write(result.image)
                if report is not None:
                    report(s.index, n - s.start + 1)
        replace_file(tmp, seg)  # fsync first: a renamed segment is complete even after a power cut
    finally:
        tmp.unlink(missing_ok=True)
    context = [m for m in decode_seconds if not s.start <= m < s.stop]  # decoded (and detected) for the plan only
    return ShardResult(
        index=s.index, frames=s.stop - s.start, seconds=time.perf_counter() - t0, load_seconds=load_s,
        context_frames=len(context), context_decode_seconds=sum(decode_seconds[m] for m in context),
        pid=os.getpid(),
    )


# ---------------------------------------------------------------------------------------------------- driver


def concat_segments(segments: list[tuple[str, int]], output: str | os.PathLike[str], fps: Fraction,
                    audio_from: str | None = None, *, keep_timestamps: bool = False) -> int:
    """Stream-copy video segments (path, index of its first frame) into `output`, audio and subtitles copied from
    `audio_from`.

    keep_timestamps: the segments already carry the source's timestamps (written with `FrameSink(like=...)`), so
    packets keep them; else timestamps are rebuilt in frame units (1/fps) from each segment's first frame. Either
    way the result carries the timestamps a single `FrameSink` would have written. Returns the number of video
    packets."""
    import av

    from .video import copy_audio

    count = 0
    with av.open(str(output), mode="w") as dst:
        with av.open(segments[0][0]) as first:
            template = first.streams.video[0]
            out = dst.add_stream_from_template(template)
            out.codec_context.framerate = Fraction(fps)  # as FrameSink's rate (a copied H.264 header may say 30000/1)
            header = bytes(template.codec_context.extradata or b"")
        if audio_from is not None:
            copy_audio(dst, audio_from)
        unit = Fraction(1) / Fraction(fps)
        for path, first_frame in segments:
            with av.open(path) as seg:
                stream = seg.streams.video[0]
                if bytes(stream.codec_context.extradata or b"") != header:
                    raise InputError(f"{path}: codec header differs from the first segment's; stream copy would "
                                     "break decoding (use --codec ffv1, or one shard)")
                scale = Fraction(stream.time_base) / unit  # segment time base in frames
                for packet in seg.demux(stream):
                    if packet.dts is None and packet.pts is None:  # demuxer flush packet
                        continue
                    if keep_timestamps:
                        packet.stream = out
                        dst.mux(packet)
                        count += 1
                        continue
                    pts = None if packet.pts is None else round(packet.pts * scale) + first_frame
                    dts = None if packet.dts is None else round(packet.dts * scale) + first_frame
                    duration = round(packet.duration * scale) if packet.duration else 0
                    packet.time_base = unit
                    packet.pts, packet.dts, packet.duration = pts, dts, duration
                    packet.stream = out
                    dst.mux(packet)
                    count += 1
    return count


class _Board:
    """Frames done per shard (a retried shard starts again from 0), read by the driver for its one progress bar."""

    def __init__(self, shards: int) -> None:
        self.done = [0] * shards

    def set(self, index: int, done: int) -> None:
        self.done[index] = done

    def total(self) -> int:
        return sum(self.done)


def _ray_shard(job: ShardJob, board) -> ShardResult:
    """Ray task body: one shard, progress posted to the board actor (fire and forget)."""
    return run_shard(job, report=lambda i, done: board.set.remote(i, done))


def _run_ray(jobs: list[ShardJob], address: str | None, bar, body: Callable = _ray_shard) -> list[ShardResult]:
    """Run `body(job, board)` (default: one shard) as a Ray task per job; the bar shows its starting count + frames done."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING)
    try:
        gpus = _use_gpus(jobs[0].options, ray.cluster_resources())
        device = "cuda" if gpus else "cpu"  # Ray hands each GPU task its own device as cuda:0
        jobs = [dataclasses.replace(j, options=dataclasses.replace(j.options, device=device)) for j in jobs]
        board = ray.remote(num_cpus=0)(_Board).remote(len(jobs))
        # a CPU task computes with the planning run's torch threads (ShardJob.threads), so it asks for that many
        # CPUs (at most a node's): Ray's OMP_NUM_THREADS=num_cpus then matches what the worker pins
        node_cpus = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = 1 if gpus else max(1, min(jobs[0].threads or 1, int(node_cpus)))
        task = ray.remote(body).options(num_gpus=1 if gpus else 0, num_cpus=cpus, max_retries=MAX_RETRIES)
        refs = [task.remote(job, board) for job in jobs]
        pending, base = list(refs), bar.n  # frames done before these jobs (a resumed run's reused pieces)
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                done = base + ray.get(board.total.remote())
                if done != bar.n:
                    bar.n = done
                    bar.refresh()
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:  # our own error inside a shard: one line, not a remote traceback
            if isinstance(exc.cause, VsKeepError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:  # e.g. a worker lost more than MAX_RETRIES times
            raise ShardError(f"a shard failed on Ray after {MAX_RETRIES} retries: {exc}") from None
    finally:
        if started:
            ray.shutdown()


def _use_gpus(options: EngineOptions, resources: dict) -> bool:
    device = options.device or "auto"
    if device == "auto":
        return resources.get("GPU", 0) > 0
    if device.startswith("cuda"):
        if resources.get("GPU", 0) <= 0:
            raise InputError(f"--device {device} but the Ray cluster has no GPUs; use --device cpu")
        return True
    return False


def restore_sharded(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: EngineOptions,
    *,
    shards: int,
    encoding: Encoding | None = None,
    ray: bool = False,
    address: str | None = None,
    progress: bool = True,
) -> list[ShardResult]:
    """Restore `input` into the video file `output` in `shards` pieces (see the module docstring).

    ray: run the pieces as Ray tasks on the running Ray instance, the cluster at `address`, or a new local one;
    else one after another in this process. Segments go to a temporary folder beside `output` (on a cluster it
    must be on storage every worker shares, like `input`); `output` appears only when complete."""
    from tqdm import tqdm

    from .engine import validate
    from .video import FrameSource, stream_format

    validate(options)
    out = Path(output)
    if out.suffix == "" or out.is_dir():
        raise InputError(f"{out}: --shards writes one video file; give OUT a suffix such as .mkv or .mp4")
    source = FrameSource(input)
    stamps = source.timestamps()
    like = stream_format(input) if source.is_video else None
    encoding = encoding or Encoding(fps=source.info.fps)
    plan = plan_shards(len(stamps), shards, sequencer_of(options))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.shards-", dir=out.parent))
    partial = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.partial{out.suffix}")
    first = [s.lo - 1 if options.scene_reset and s.lo > 0 else s.lo for s in plan]  # the flag of lo needs lo - 1
    jobs = [
        ShardJob(input=str(Path(input).resolve()), segment=str((work / f"{s.index:05d}{out.suffix}").resolve()),
                 shard=s, total=len(stamps), lo_pts=stamps[f], options=options, encoding=encoding, like=like, first=f,
                 threads=torch.get_num_threads())
        for s, f in zip(plan, first)
    ]
    bar = tqdm(total=len(stamps), unit="frame", file=sys.stderr, disable=not progress, desc=f"restore x{len(plan)}")
    t0 = time.perf_counter()
    try:
        if ray:
            results = _run_ray(jobs, address, bar)
        else:
            done = [0] * len(jobs)

            def report(i: int, n: int) -> None:
                done[i] = n
                bar.n = sum(done)
                bar.refresh()

            results = [run_shard(job, report) for job in jobs]
        audio = None if source.is_folder else str(input)
        concat_segments([(j.segment, j.shard.start) for j in jobs], partial, encoding.fps, audio_from=audio,
                        keep_timestamps=like is not None)
        os.replace(partial, out)
    finally:
        bar.close()
        partial.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %d frames in %d shards to %s (%.1f s)", len(stamps), len(plan), out, time.perf_counter() - t0)
    return results
