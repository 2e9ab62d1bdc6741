"""Resumable `vs-keep restore`: finished pieces are kept in a work folder beside OUT, so a run killed at 95 %
(power cut, OOM kill, `kill -9`, a lost Ray head) continues where it stopped and gives the same frames.

Why this is exact: output frame n depends only on its chunk and the detections around it (`vs_keep.shards`), so
the clip is cut into pieces of whole chunks (`plan_pieces`, inside the shards of `--shards N`), each restored with
`shards.run_shard` (its detection context decoded again, detections cached by the process's engine) and encoded
as its own segment. When all are done, `shards.concat_segments` joins them by stream copy with the input's audio
and subtitles, and the result is renamed to OUT. With a lossless codec the frames equal a single pass bit for bit;
every piece is encoded on its own, so even a lossy OUT is the same bytes whether or not the run was interrupted.

Work folder `.OUT.resume/` (hidden, beside OUT): `lock` (one run per OUT), `manifest.json` (what the pieces were
made from: input identity, every option that changes frames, weights hash, numerics, encoder settings),
`<identity>-<start>-<stop>.<ext>` pieces (written under a temporary name, fsynced and renamed when complete) and
a `.json` record each (size and SHA-256, written after the rename). A piece is reused only when its name carries
the current identity and its bytes match its record; anything else in the folder is deleted before work starts.
The folder goes when OUT is in place. A killed run redoes at most the piece each worker was writing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write, file_lock, make_parents, output_errors, remove_empty, replacing
from .errors import InputError, OutputError, VsKeepError
from .shards import (Encoding, Shard, ShardError, ShardJob, ShardResult, concat_segments, run_shard,
                     sequencer_of, shard_of, split)
from .weights import sha256_file

if TYPE_CHECKING:  # importing this module stays cheap: `vs-keep restore --help` reads PIECE_FRAMES, loads no torch
    from .engine import EngineOptions
    from .sequencer import Sequencer

__all__ = ["PIECE_FRAMES", "input_identity", "plan_pieces", "restore_resumable", "run_piece",
           "work_folder"]

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # times Ray reruns a piece whose worker was lost
#: default piece length in frames (rounded down to whole chunks): what a killed run redoes at most per worker
PIECE_FRAMES = 500
_MIB = 1 << 20
_FORMAT = 1  # manifest layout version


def work_folder(output: str | os.PathLike[str]) -> Path:
    """Where a run on `output` keeps its finished pieces: the hidden folder `.NAME.resume` beside it."""
    out = Path(output)
    return out.with_name(f".{out.name}.resume")


def plan_pieces(total: int, sequencer: Sequencer, *, shards: int = 1, piece: int = PIECE_FRAMES) -> list[list[Shard]]:
    """Frames [0, total) cut into at most `shards` near-even ranges of whole chunks, each cut into near-equal
    pieces of whole chunks, at most `piece` frames (at least one chunk) long, with the input window each reads
    (`shard_of`). Pieces are numbered through the clip; the grid depends only on these arguments."""
    if shards < 1:
        raise InputError(f"--shards must be >= 1, got {shards}")
    if total < 1:
        raise InputError("the input has no frames")
    chunk = sequencer.chunk
    longest = max(piece // chunk, 1) * chunk  # whole chunks, at least one
    groups = [split(a, b, math.ceil((b - a) / longest), chunk) for a, b in split(0, total, shards, chunk)]
    starts = itertools.accumulate((len(g) for g in groups), initial=0)  # pieces numbered through the clip
    return [[shard_of(i, a, b, total, sequencer) for i, (a, b) in enumerate(g, k)] for g, k in zip(groups, starts)]


# ---------------------------------------------------------------------------------------------------- identity


def _ends_sha256(path: Path) -> str:
    """SHA-256 of a file's first and last MiB: enough to notice an input replaced in place, without reading a film."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        size = os.fstat(fh.fileno()).st_size
        if size > _MIB:
            fh.seek(max(size - _MIB, _MIB))
            h.update(fh.read(_MIB))
    return h.hexdigest()


def input_identity(path: str | os.PathLike[str], frames: int) -> dict:
    """Size, mtime, hash of the first and last MiB, frame count (a folder of images: name, size and mtime of each)."""
    p = Path(path).resolve()
    if p.is_dir():
        h = hashlib.sha256()
        for child in sorted(p.iterdir()):
            st = child.stat()
            h.update(f"{child.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": str(p), "files": h.hexdigest(), "frames": frames}
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ends_sha256": _ends_sha256(p),
            "frames": frames}


def _weights_identity(weights) -> str:
    """The checkpoint's SHA-256 when it is a file; else its registry name (the official file is hash-checked)."""
    if weights is None:
        return "official"
    path = Path(weights).expanduser()
    return sha256_file(path) if path.is_file() else f"official:{weights}"


def _job_identity(input_id: dict, options: EngineOptions, encoding: Encoding) -> dict:
    import av

    same_frames = ("download", "cache_chunks", "tune_malloc")  # fields that never change a frame
    engine = {k: v for k, v in dataclasses.asdict(options).items() if k not in same_frames}
    engine.update(weights=_weights_identity(options.weights), tiny_weights=_weights_identity(options.tiny_weights)
                  if options.tiny_weights else None, parse=str(options.parse))
    enc = {k: str(v) for k, v in dataclasses.asdict(encoding).items()}
    enc.update(pyav=av.__version__, libavcodec=str(av.library_versions.get("libavcodec")))
    from .engine import pick_device
    from .numerics import numerics_identity

    # Ray workers compute with this run's torch threads (ShardJob.threads), so a Ray run has the same numerics
    numerics = numerics_identity(pick_device(options.device), "fp16" if options.fp16 else options.cpu_precision,
                                 cpu_fast=options.cpu_fast)
    return {"format": _FORMAT, "input": input_id, "options": engine, "numerics": numerics, "encoding": enc}


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------- pieces


def _record(piece: Path) -> Path:
    return piece.with_name(piece.name + ".json")


def run_piece(job: ShardJob, report: Callable[[int, int], None] | None = None) -> ShardResult:
    """Restore one piece (`run_shard`: temporary name, fsync, rename) and write its record (size and SHA-256)."""
    result = run_shard(job, report)
    piece = Path(job.segment)
    atomic_write(_record(piece), json.dumps({"bytes": piece.stat().st_size, "sha256": sha256_file(piece),
                                             "frames": job.shard.stop - job.shard.start}).encode())
    return result


def _ray_piece(job: ShardJob, board) -> ShardResult:
    """Ray task body: one piece, progress posted to the board actor."""
    return run_piece(job, report=lambda i, done: board.set.remote(i, done))


def _is_complete(piece: Path, frames: int) -> bool:
    """The piece exists and its bytes are those its record describes (a truncated or damaged piece is not)."""
    try:
        rec = json.loads(_record(piece).read_text())
        return (rec["frames"] == frames and piece.stat().st_size == rec["bytes"]
                and sha256_file(piece) == rec["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sweep(work: Path, keep: set[str]) -> None:
    """Delete everything in the work folder but the lock and `keep` (stale pieces, temporary files)."""
    for child in work.iterdir():
        if child.name in keep or child.name == "lock":
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- Ray


class _Board:
    """Frames done per piece (a retried piece starts again from 0), read by the driver for its one progress bar."""

    def __init__(self, pieces: int) -> None:
        self.done = [0] * pieces

    def set(self, index: int, done: int) -> None:
        self.done[index] = done

    def total(self) -> int:
        return sum(self.done)


def _run_ray(jobs: list[ShardJob], address: str | None, bar) -> list[ShardResult]:
    """Run each piece as a Ray task (`_ray_piece`); the bar shows its starting count + frames done. A worker lost
    mid-piece is replaced and the piece rerun from its start (`MAX_RETRIES`), under a new temporary name."""
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
        task = ray.remote(_ray_piece).options(num_gpus=1 if gpus else 0, num_cpus=cpus, max_retries=MAX_RETRIES)
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
        except ray.exceptions.RayTaskError as exc:  # our own error inside a piece: one line, not a remote traceback
            if isinstance(exc.cause, VsKeepError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:  # e.g. a worker lost more than MAX_RETRIES times
            raise ShardError(f"a piece failed on Ray after {MAX_RETRIES} retries: {exc}") from None
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


# ---------------------------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _work_folder(out: Path) -> Iterator[Path]:
    """Create and lock the work folder; another run holding it is refused. Folders this creates above OUT and a
    work folder without a finished piece are removed again on failure."""
    work = work_folder(out)
    created = make_parents(out)
    try:
        with output_errors(out):
            work.mkdir(exist_ok=True)
    except OSError:
        remove_empty(created)
        raise
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(work / "lock", wait=False))
        except BlockingIOError:
            raise OutputError(f"{out}: another vs-keep run is writing it (lock {work / 'lock'} is held); wait for "
                              "it to finish or stop it first") from None
        try:
            yield work
        except BaseException:
            if not any(p.suffix == ".json" and p.name != "manifest.json" for p in work.iterdir()):
                shutil.rmtree(work, ignore_errors=True)
                remove_empty(created)
            raise


def restore_resumable(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: EngineOptions,
    *,
    encoding: Encoding,
    shards: int = 1,
    piece: int = PIECE_FRAMES,
    ray: bool = False,
    address: str | None = None,
    progress: bool = True,
    restart: bool = False,
    background: str | os.PathLike[str] | None = None,
) -> list[ShardResult]:
    """Restore `input` into the video file `output` piece by piece, reusing the finished pieces of an earlier run
    of the same job (see the module docstring); returns the results of the pieces restored by this run.

    shards: cut the clip into this many near-even ranges first (`plan_pieces`), each cut into pieces. ray: run the
    pieces as Ray tasks (one task per piece) on the running Ray instance, the cluster at `address`, or a new local
    one; else one after another in this process. On a cluster the work folder beside `output` must be on storage
    every worker shares, like `input`. restart: discard the work folder first. background: a pre-upscaled video,
    one frame per input frame, under the restored faces (`--background`). Nothing appears at `output` until it is
    complete; the input is only read."""
    import torch
    from tqdm import tqdm

    from .engine import validate
    from .video import FrameSource, stream_format

    validate(options)
    if piece < 1:
        raise OutputError(f"--piece must be >= 1 frame, got {piece}")
    out = Path(output)
    out = Path(os.path.realpath(out)) if out.is_symlink() else out
    source = FrameSource(input)
    stamps = source.timestamps()
    total = len(stamps)
    like = stream_format(input) if source.is_video else None
    groups = plan_pieces(total, sequencer_of(options), shards=shards, piece=piece)
    with _work_folder(out) as work:
        identity = _job_identity(input_identity(input, total), options, encoding)
        if background is not None:  # pieces made over another background are not reused
            identity["background"] = input_identity(background, total)
        tag = _digest(identity)
        jobs: list[ShardJob] = []
        for s in (s for group in groups for s in group):
            first = s.lo - 1 if options.scene_reset and s.lo > 0 else s.lo  # the scene flag of lo needs lo - 1
            jobs.append(ShardJob(input=str(Path(input).resolve()),
                                 segment=str((work / f"{tag}-{s.start:09d}-{s.stop:09d}{out.suffix}").resolve()),
                                 shard=s, total=total, first=first, first_pts=stamps[first], options=options,
                                 encoding=encoding, like=like, threads=torch.get_num_threads(),
                                 background=None if background is None else str(Path(background).resolve())))
        done = [] if restart else [j for j in jobs if _is_complete(Path(j.segment), j.shard.stop - j.shard.start)]
        _sweep(work, keep={"manifest.json"} | {Path(j.segment).name for j in done}
               | {_record(Path(j.segment)).name for j in done})
        atomic_write(work / "manifest.json", json.dumps(identity, indent=1, sort_keys=True).encode())
        reused = sum(j.shard.stop - j.shard.start for j in done)
        if reused:
            log.info("resuming: %s of %s frames done (%s)", f"{reused:,}", f"{total:,}", work)
        todo = [j for j in jobs if j not in done]
        bar = tqdm(total=total, initial=reused, unit="frame", file=sys.stderr, disable=not progress,
                   desc="restore" if shards == 1 else f"restore x{len(groups)}")
        t0 = time.perf_counter()
        try:
            if ray and todo:
                todo = [dataclasses.replace(j, shard=dataclasses.replace(j.shard, index=k)) for k, j in enumerate(todo)]
                results = _run_ray(todo, address, bar)
            else:
                running = [0] * len(jobs)

                def report(i: int, n: int) -> None:  # piece i has n frames done
                    bar.update(n - running[i])
                    running[i] = n

                results = [run_piece(job, report) for job in todo]
            with replacing(out, work / f"concat.partial{out.suffix}") as partial:
                concat_segments([j.segment for j in jobs], partial, encoding.fps,
                                audio_from=str(input) if source.is_video else None)
        except BaseException as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputError(_disk_full(work, jobs, total)) from None
            kept = sum(j.shard.stop - j.shard.start for j in jobs if _record(Path(j.segment)).exists())
            if kept:
                log.warning("kept %s of %s finished frames in %s: run the same command again to resume "
                            "(--restart starts over)", f"{kept:,}", f"{total:,}", work)
            raise
        finally:
            bar.close()
        log.info("wrote %d frames in %d piece%s (%d reused) to %s (%.1f s)", total, len(jobs),
                 "" if len(jobs) == 1 else "s", len(done), out, time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    return results


def _disk_full(work: Path, jobs: list[ShardJob], total: int) -> str:
    """The one line for a full disk: the folder, what is kept, and about how much more space the job needs."""
    finished = [j for j in jobs if _record(Path(j.segment)).exists()]
    frames = sum(j.shard.stop - j.shard.start for j in finished)
    size = sum(Path(j.segment).stat().st_size for j in finished)
    if frames:
        need = size / frames * (total - frames) + size / frames * total  # the rest, then the joined copy of it all
        more = f"about {_bytes(need)} more (the remaining pieces, then the joined output)"
    else:
        more = "room for about twice the output"
    return (f"{work}: the disk is full ({frames:,} of {total:,} frames finished and kept); the job needs {more}: "
            "free space and run the same command again to resume")


def _bytes(n: float) -> str:
    units = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1, "bytes"))
    return next(f"{n / f:.1f} {unit}" for f, unit in units if n >= f or f == 1)
