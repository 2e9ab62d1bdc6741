"""One shard of a video: output frames [start, stop) of whole chunks restored from their input window alone and
encoded as one segment (`run_shard`), and the segments joined by stream copy (`concat_segments`). The driver that
plans the pieces and runs them in this process or on Ray is `vs_keep.resume.restore_resumable`.

Output frame n depends only on a bounded window of input frames (`vs_keep.sequencer`). So a video cut at multiples
of `chunk` can be restored in pieces: shard [a, b) decodes frames [lo, hi) = `Sequencer.input_window(a, b)`
(frame-accurate seek to lo; the window includes the priming runs of `overlap=`/`stabilize=`), renders frames
a..b-1 with the linear pass `vs_keep.stream.restore_stream` over that window (from empty caches), merges the
faces into the decoded frames in their own pixel format (`vs_keep.pixels.merge_into_frame`, as `vs-keep restore` does;
source timestamps, colour tags and pixel format kept) and encodes them as one segment. Scene cuts come from
`vs_keep.scene.is_cut` on consecutive frames, as in the single run (a shard decodes one frame before its window
for the flag of its first frame). With a lossless codec the joined segments decode to the single-process output
bit for bit; with a lossy codec each segment is encoded on its own (an extra keyframe and a fresh rate control at
each seam, see the README).

Each worker process loads the weights once (`_engine_for` keeps the last engine).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import replace_file
from .errors import InputError, VsKeepError

if TYPE_CHECKING:  # importing this module stays cheap (`vs-keep restore --help` loads no torch)
    import numpy as np

    from .engine import EngineOptions
    from .sequencer import Sequencer

__all__ = ["Encoding", "Shard", "ShardError", "ShardJob", "ShardResult", "concat_segments", "plan_shards",
           "run_shard", "sequencer_of", "shard_of"]


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
    from .sequencer import Sequencer

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
    import torch

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
    import torch

    from .pixels import merge_into_frame, to_rgb
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
                    sink.write_frame(merge_into_frame(decoded.pop(n), result.image, result.alpha,
                                                      gray=job.options.gray is True, strength=job.options.strength,
                                                      upscale=engine.upscale))
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
