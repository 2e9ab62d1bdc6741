"""One shard of a video: output frames [start, stop) of whole chunks restored from their input window alone and
encoded as one segment (`run_shard`), and the segments joined by stream copy (`concat_segments`). The driver that
plans the pieces and runs them in this process or on Ray is `vs_keep.resume.restore_resumable`.

Output frame n depends only on a bounded window of input frames (`vs_keep.sequencer`). So a video cut at multiples
of `chunk` can be restored in pieces: shard [a, b) decodes frames [lo, hi) = `Sequencer.input_window(a, b)`
(frame-accurate seek to lo; the window includes the priming runs of `overlap=`/`stabilize=`), renders frames
a..b-1 with `vs-keep restore`'s own loop `vs_keep.stream.restore_frames` over that window (from empty caches:
faces merged into the decoded frames in their own pixel format; source timestamps, colour tags and pixel format
kept; image input stamped with frame numbers) and encodes them as one segment. Scene cuts come from
`vs_keep.scene.is_cut` on consecutive frames, as in the single run (a shard decodes one frame before its window
for the flag of its first frame). With a lossless codec the joined segments decode to the single-process output
bit for bit; with a lossy codec each segment is encoded on its own (an extra keyframe and a fresh rate control at
each seam, see the README).

Each worker process loads the weights once (`_engine_for` keeps the last engine).
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import replacing
from .errors import InputError, VsKeepError

if TYPE_CHECKING:  # importing this module stays cheap (`vs-keep restore --help` loads no torch)
    from .engine import EngineOptions
    from .sequencer import Sequencer

__all__ = ["Encoding", "Shard", "ShardError", "ShardJob", "ShardResult", "concat_segments", "run_shard",
           "sequencer_of", "shard_of", "split"]


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


def split(start: int, stop: int, count: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) (start a multiple of `chunk`) cut into at most `count` ranges of whole chunks, as even as
    possible (the last may end inside its chunk, at `stop`)."""
    chunks = math.ceil((stop - start) / chunk)
    count = min(count, chunks)
    edges = [min(start + round(i * chunks / count) * chunk, stop) for i in range(count + 1)]
    return list(zip(edges, edges[1:]))


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
    first: int  # first decoded frame: lo, or lo - 1 for the scene flag of lo
    first_pts: int  # its timestamp (`FrameSource.timestamps`), so a worker seeks without demuxing the file again
    options: EngineOptions
    encoding: Encoding
    like: object | None  # the input's video.StreamFormat (None for images: RGB frames)
    background: str | None  # `--background`: a pre-upscaled video, one frame per input frame
    #: torch intra-op threads of the planning run: float32 results depend on it, so every worker pins torch to it
    threads: int


@dataclass(frozen=True)
class ShardResult:
    index: int
    frames: int
    seconds: float
    load_seconds: float  # building the engine (0 when this process had it already)
    context_frames: int  # frames decoded and detected only as context for the shard's first/last chunks
    context_decode_seconds: float  # decode time spent on them
    pid: int


_ENGINE: tuple[object, object] | None = None  # (key, FaceEngine): one per process


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

    from .scene import is_cut
    from .stream import restore_frames
    from .video import FrameSink, read_frames

    t0 = time.perf_counter()
    if torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)  # before the engine is built: it keeps the count of its builder
    engine, load_s = _engine_for(job.options, job.input)
    engine.clear_caches()  # a shard reads its own window only, never what an earlier shard in this process cached
    s = job.shard
    if engine.sequencer.input_window(s.start, s.stop, job.total) != (s.lo, s.hi):
        raise ShardError(f"shard {s.index}: planned window [{s.lo}, {s.hi}) is not the engine's (a bug in shards.py)")
    context_seconds: list[float] = []  # time spent waiting for each frame decoded only as context for the plan

    def timed(frames: Iterator) -> Iterator:
        for m in itertools.count(job.first):
            t = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            if not s.start <= m < s.stop:
                context_seconds.append(time.perf_counter() - t)
            yield frame

    frames = timed(read_frames(job.input, start=job.first, start_pts=job.first_pts, max_frames=s.hi - job.first))
    background = None if job.background is None else read_frames(job.background, start=s.start)
    seg, e, o = Path(job.segment), job.encoding, job.options
    # fsynced, then renamed: a segment under its name is complete even after a power cut (a killed run's
    # temporary is swept from the work folder by the next run)
    with (replacing(seg, seg.with_name(f"{seg.stem}.{uuid.uuid4().hex[:8]}.partial{seg.suffix}")) as tmp,
          FrameSink(tmp, fps=e.fps, codec=e.codec, crf=e.crf, preset=e.preset, like=job.like, pix_fmt=e.pix_fmt,
                    first=s.start) as sink):
        for n, frame in enumerate(restore_frames(engine, frames, job.total, gray=o.gray is True, strength=o.strength,
                                                 scene=is_cut if o.scene_reset else None, start=s.start, stop=s.stop,
                                                 first=job.first, background=background), s.start):
            sink.write(frame)
            if report is not None:
                report(s.index, n - s.start + 1)
    return ShardResult(
        index=s.index, frames=s.stop - s.start, seconds=time.perf_counter() - t0, load_seconds=load_s,
        context_frames=len(context_seconds), context_decode_seconds=sum(context_seconds), pid=os.getpid(),
    )


def concat_segments(segments: list[str], output: str | os.PathLike[str], fps: Fraction,
                    audio_from: str | None = None) -> None:
    """Stream-copy video segments into `output`, audio and subtitles copied from `audio_from`. The segments carry
    the timestamps a single `FrameSink` would have written (the source's with `like=`, else frame numbers counted
    from `first=`), so packets keep them (the dts Matroska does not store are rebuilt)."""
    import av

    from .video import copy_audio

    with av.open(str(output), mode="w") as dst:
        with av.open(segments[0]) as first:
            template = first.streams.video[0]
            out = dst.add_stream_from_template(template)
            out.codec_context.framerate = Fraction(fps)  # as FrameSink's rate (a copied H.264 header may say 30000/1)
            header = bytes(template.codec_context.extradata or b"")
            # Matroska stores no dts: its demuxer leaves the first `lag` packets (the B-frame delay) without one
            lag = next((i for i, p in enumerate(first.demux(template)) if p.dts is not None or p.pts is None), 0)
        shown: list[int] = []  # with lag: pts not yet used as a dts, a heap
        if audio_from is not None:
            copy_audio(dst, audio_from)
        for path in segments:
            with av.open(path) as seg:
                stream = seg.streams.video[0]
                if bytes(stream.codec_context.extradata or b"") != header:
                    raise InputError(f"{path}: codec header differs from the first segment's; stream copy would "
                                     "break decoding (use --codec ffv1, or one shard)")
                for packet in seg.demux(stream):
                    if packet.dts is None and packet.pts is None:  # demuxer flush packet
                        continue
                    if lag:  # dts rebuilt over the whole clip, as the encoder set them: packet j decodes when
                        # frame j - lag is shown (a segment's own first packets follow the last one's frames)
                        shown = shown or [packet.pts - k * (packet.duration or 1) for k in range(lag, 0, -1)]
                        packet.dts = heapq.heappushpop(shown, packet.pts)
                    packet.stream = out
                    dst.mux(packet)
