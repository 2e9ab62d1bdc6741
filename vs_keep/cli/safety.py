"""What keeps a `vs-keep` run from losing data or printing a traceback: path checks, input completeness, and the
one-line description of any failure.

Why: film restorers run jobs overnight on their only copy. A run must never overwrite its input, never leave a
half-written output under the final name (`vs_keep.atomic` writes beside it and renames at the end), never turn a
truncated input into a silently shorter output, and always end with one line that names the file and the fix.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import same_file
from ..errors import OOM_ADVICE_CLI, InputError, OutputError, VsKeepError, is_out_of_memory, user_message

__all__ = ["checked_length", "decoding", "failure_line", "refuse_overwriting_input"]

PathLike = str | os.PathLike[str]

#: frames a decoded video may fall short of its header's duration before it counts as truncated (rounding, VFR)
TRUNCATION_SLACK = 2


def refuse_overwriting_input(input: PathLike, output: PathLike) -> None:
    """Raise OutputError when `output` is `input` on disk (same device and inode: also through symlinks and hard
    links, and for folders)."""
    if same_file(input, output):
        raise OutputError(f"output {output} is the input {input} (the same file on disk): the input would be "
                          "overwritten; choose another output path")


def _declared_seconds(path: Path) -> float | None:
    """Duration of the first video stream as its header states it (stream duration, its DURATION tag, or the
    container's when video is the only stream); None when the header does not say."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.duration is not None and s.time_base is not None:
            return float(s.duration * s.time_base)
        tag = s.metadata.get("DURATION")
        if tag:
            try:
                h, m, sec = tag.split(":")
                return int(h) * 3600 + int(m) * 60 + float(sec)
            except ValueError:  # an unusual tag says nothing we can check against
                pass
        if c.duration is not None and len(c.streams) == 1:
            return c.duration / av.time_base
    return None


def checked_length(source) -> int:
    """Exact frame count of a `FrameSource` (frames decoded, never packet counts); InputError when the video is empty, cannot be
    demuxed, or ends before the duration its header declares (a truncated copy or an interrupted download)."""
    path = Path(source.path)
    try:
        count = source.count_frames()  # decoded: raw streams (.h264, ...) carry no timestamps to count by
        declared = _declared_seconds(path) if source.is_video else None
    except VsKeepError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for damaged files
        raise InputError(f"{path}: cannot read the video ({user_message(exc)}); the file may be damaged: "
                         "re-encode or re-download it") from None
    if count == 0:
        raise InputError(f"{path}: no video frames; pass a video with at least one frame")
    if declared is not None:
        fps = Fraction(source.info.fps)
        expected = round(declared * fps)
        if count + TRUNCATION_SLACK < expected:
            raise InputError(
                f"{path}: truncated: its header declares {declared:.2f} s (~{expected} frames) but only {count} "
                "frames are in the file; use a complete copy (re-download or re-export it)"
            )
    return count


def decoding(frames: Iterable[np.ndarray], path: PathLike) -> Iterator[np.ndarray]:
    """Iterate `frames` decoded from `path`; a decoder error becomes one InputError naming the file and frame."""
    n = 0  # a generator's consumer never raises into it: what the loop catches comes from the decoder
    try:
        for frame in frames:
            yield frame
            n += 1
    except VsKeepError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV / OpenCV errors mid-decode
        raise InputError(f"{path}: cannot decode frame {n} ({user_message(exc)}); the file is damaged: "
                         "re-encode or re-download it") from None


_OS_FIXES = {
    errno.EACCES: "fix its permissions or choose a writable location",
    errno.EPERM: "fix its permissions or choose a writable location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free space or write to another disk",
    errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path (a part of it is a file, not a folder)",
    errno.EISDIR: "it is a folder; pass a file path",
    errno.EEXIST: "remove it or choose another path",
    errno.EIO: "the disk reported an I/O error; check the drive or write elsewhere",
}


def failure_line(exc: BaseException) -> str:
    """The one line a failed command prints (without the `vs-keep CMD:` prefix): the file, what failed, the fix."""
    if isinstance(exc, VsKeepError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"GPU out of memory: {OOM_ADVICE_CLI}"
    if isinstance(exc, MemoryError):
        return "out of memory: lower --upscale or --chunk, or close other programs"
    if isinstance(exc, OSError):
        reason = exc.strerror or user_message(exc)
        fix = _OS_FIXES.get(exc.errno or 0, "check the file and the disk")
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{reason}; {fix}"
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        av = None
    if av is not None and type(exc).__name__ == "UnknownCodecError":
        return f"ffmpeg has no codec {exc}; pick one it has (e.g. --codec libx264, libx265 or ffv1)"
    if av is not None and isinstance(exc, av.error.FFmpegError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}ffmpeg: {exc.strerror or exc}; the file may be damaged or in a format ffmpeg cannot handle"
    return f"{user_message(exc)} (unexpected; run again with --debug for the traceback and please report it)"
