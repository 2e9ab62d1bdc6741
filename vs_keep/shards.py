"""Restore one video in shards (frame ranges), one after another or as Ray tasks, with the frames of one process.

Output frame n depends only on the input frames of its chunk and on the detections of `chunk_window` around it
(see `vs_keep.random_access`). So a video cut at multiples of `chunk` can be restored in pieces: shard [a, b)
decodes frames [lo, hi) = `chunk_window(a, b)` clipped to the clip (frame-accurate seek to lo), renders frames
a..b-1 with the same `RandomAccessRestorer.render` the single-process run uses, merges the faces into the decoded
frames in their own pixel format (`vs_keep.pixels.compose`, as `vs-keep restore` does; source timestamps, colour
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

from .atomic import replace_file
from .engine import EngineOptions
from .errors import InputError, VsKeepError
from .face.plan import chunk_window
from .face.smooth import SIGMA

log = logging.getLogger(__name__)

#: test hook: when this variable names an existing file, the first shard to reach its second frame removes the file
#: and kills its own process (a worker lost mid-shard); tests use it to prove that a retried shard changes nothing
KILL_ENV = "VS_KEEP_TEST_KILL_SHARD"
MAX_RETRIES = 3


__all__ = ["Encoding", "Shard", "ShardError", "ShardJob", "ShardResult", "concat_segments", "plan_shards",
           "restore_sharded", "run_shard", "shard_of"]

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


def plan_shards(total: int, chunk: int, count: int, *, max_gap: int, sigma: float = SIGMA) -> list[Shard]:
    """Cut frames [0, total) into at most `count` ranges of whole chunks, as even as possible."""
    if count < 1:
        raise InputError(f"--shards must be >= 1, got {count}")
    if total < 1:
        raise InputError("the input has no frames")
    chunks = math.ceil(total / chunk)
    count = min(count, chunks)
    edges = [min(round(i * chunks / count) * chunk, total) for i in range(count + 1)]
    return [shard_of(i, a, b, total, max_gap=max_gap, sigma=sigma) for i, (a, b) in enumerate(zip(edges, edges[1:]))]


def shard_of(index: int, start: int, stop: int, total: int, *, max_gap: int, sigma: float = SIGMA) -> Shard:
    """Output frames [start, stop) (whole chunks) with the input frames their detections need, clipped to the clip."""
    lo, hi = chunk_window(start, stop, max_gap=max_gap, sigma=sigma)
    return Shard(index=index, start=start, stop=stop, lo=max(lo, 0), hi=min(hi, total))


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
    key = (options, os.path.abspath(source), st.st_size, st.st_mtime_ns)
    if _ENGINE is not None and _ENGINE[0] == key:
        return _ENGINE[1], 0.0
    if _ENGINE is not None:
        _ENGINE[1].close()
        _ENGINE = None
    t = time.perf_counter()
    engine = build_engine(options)
    _ENGINE = (key, engine)
    return engine, time.perf_counter() - t


def _kill_hook() -> None:
    flag = os.environ.get(KILL_ENV)
    if not flag:
        return
    try:
        os.remove(flag)
    except FileNotFoundError:
        return
    log.warning("%s: killing this worker (pid %d) mid-shard", KILL_ENV, os.getpid())
    os._exit(17)


def run_shard(job: ShardJob, report: Report | None = None) -> ShardResult:
    """Restore and encode one shard into `job.segment` (written under a temporary name, renamed when complete)."""
    from .pixels import compose, resize, to_rgb
    from .random_access import StreamAccess
    from .scene import is_cut
    from .video import FrameSink, decode, iter_frames

    t0 = time.perf_counter()
    engine, load_s = _engine_for(job.options, job.input)
    s = job.shard
    first = s.lo if job.first is None else job.first
    decoded: dict[int, object] = {}  # the shard's decoded frames (own pixel format) until their output is written

    def video_frames() -> Iterable[np.ndarray]:
        for i, frame in enumerate(decode(job.input, start=first, start_pts=job.lo_pts, max_frames=s.hi - first)):
            if first + i >= s.start:
                decoded[first + i] = frame
            yield to_rgb(frame)

    if job.like is not None:
        frames = video_frames()
    else:
        frames = iter_frames(job.input, start=first, start_pts=job.lo_pts, max_frames=s.hi - first)
    scene = is_cut if job.options.scene_reset else None
    access = StreamAccess(frames, job.total, scene, lo=s.lo, hi=s.hi, first=first)
    seg = Path(job.segment)
    tmp = seg.with_name(f"{seg.stem}.{uuid.uuid4().hex[:8]}.partial{seg.suffix}")
    e = job.encoding
    layer = job.like is not None
    try:
        with FrameSink(tmp, fps=e.fps, codec=e.codec, crf=e.crf, preset=e.preset, like=job.like, pix_fmt=e.pix_fmt) as sink:
            for n in range(s.start, s.stop):
                result = engine.render(n, access, layer=layer)
                access.release_before(result.span.start)
                if layer:
                    frame = decoded.pop(n)
                    if engine.upscale > 1:
                        frame = resize(frame, frame.width * engine.upscale, frame.height * engine.upscale)
                    sink.write_frame(compose(frame, result.image, result.alpha))
                else:
                    sink.write(result.image)
                if report is not None:
                    report(s.index, n - s.start + 1)
                if n == s.start + 1:
                    _kill_hook()
        replace_file(tmp, seg)  # fsync first: a renamed segment is complete even after a power cut
    finally:
        tmp.unlink(missing_ok=True)
    context = [m for m in access.decode_seconds if not s.start <= m < s.stop]  # decoded (and detected) for the plan only
    return ShardResult(
        index=s.index, frames=s.stop - s.start, seconds=time.perf_counter() - t0, load_seconds=load_s,
        context_frames=len(context), context_decode_seconds=sum(access.decode_seconds[m] for m in context),
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


def _run_ray(jobs: list[ShardJob], address: str | None, bar, body: Callable = _ray_shard,
             done_before: int = 0) -> list[ShardResult]:
    """Run `body(job, board)` (default: one shard) as a Ray task per job; the bar shows done_before + frames done."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING)
    try:
        gpus = _use_gpus(jobs[0].options, ray.cluster_resources())
        device = "cuda" if gpus else "cpu"  # Ray hands each GPU task its own device as cuda:0
        jobs = [dataclasses.replace(j, options=dataclasses.replace(j.options, device=device)) for j in jobs]
        board = ray.remote(num_cpus=0)(_Board).remote(len(jobs))
        task = ray.remote(body).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=MAX_RETRIES)
        refs = [task.remote(job, board) for job in jobs]
        pending = list(refs)
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                done = done_before + ray.get(board.total.remote())
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
    plan = plan_shards(len(stamps), options.chunk, shards, max_gap=options.max_gap)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.shards-", dir=out.parent))
    partial = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.partial{out.suffix}")
    first = [s.lo - 1 if options.scene_reset and s.lo > 0 else s.lo for s in plan]  # the flag of lo needs lo - 1
    jobs = [
        ShardJob(input=str(Path(input).resolve()), segment=str((work / f"{s.index:05d}{out.suffix}").resolve()),
                 shard=s, total=len(stamps), lo_pts=stamps[f], options=options, encoding=encoding, like=like, first=f)
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
