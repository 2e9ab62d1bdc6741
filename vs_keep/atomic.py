"""The one file lock and the one atomic write of vs-keep (weights cache, TensorRT engines, CLI outputs).

Why: a crash, Ctrl-C, a full disk or two processes at once must never leave a half-written file under a final
name. Everything is first written under a hidden temporary name in the destination folder (same file system, so
the final step is a `rename`), flushed to disk (`fsync`) and then renamed in one step; on any failure the temporary
file is removed and the destination is left as it was. Concurrent writers of one cache entry are serialised with an
advisory lock file (`flock`; where fcntl is missing, e.g. Windows, writes stay atomic, just not serialised).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["atomic_output", "atomic_write", "file_lock", "is_folder_output", "make_parents", "output_errors",
           "remove_empty", "replace_file", "replacing", "same_file"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def file_lock(path: PathLike, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the duration of the block.

    wait=False: when another process holds it, raise BlockingIOError (naming `path`) instead of waiting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # no fcntl: atomic renames still protect the files, only serialisation is lost
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BlockingIOError(errno.EWOULDBLOCK, "locked by another process", str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    """fsync a file, or every file of a folder (and the folder itself)."""
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                _fsync_path(child)
        _fsync_dir(path)
        return
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    """The process umask without changing it where /proc says it (Linux); else read by setting it back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the file the mode a plain open() would (0666/0777 minus umask)."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def replace_file(src: PathLike, dst: PathLike) -> None:
    """fsync `src`, then rename it over `dst` in one step (both in one folder / file system)."""
    src, dst = Path(src), Path(dst)
    _fsync_path(src)
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def _temp_file(final: Path, *, keep_suffix: bool = False) -> Path:
    """A new empty hidden file `.NAME.XXXX.tmp` beside `final`, which no glob for the final suffix matches (the
    resume records, `*.json`); keep_suffix: `.STEM.XXXX.tmp.SUFFIX`, so muxers pick the container. Its mode is the
    one a plain open() would give it."""
    prefix, suffix = (f".{final.stem}.", f".tmp{final.suffix}") if keep_suffix else (f".{final.name}.", ".tmp")
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    _default_mode(Path(name))
    return Path(name)


@contextlib.contextmanager
def replacing(path: PathLike, tmp: PathLike | None = None) -> Iterator[Path]:
    """Yield the temporary file to write `path`'s new content to (`tmp`, in `path`'s folder; else a new one beside
    it). When the block succeeds it is fsynced and renamed over `path` in one step; on any failure it is removed."""
    tmp = _temp_file(Path(path)) if tmp is None else Path(tmp)
    try:
        yield tmp
        replace_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when `a` and `b` are one file or folder on disk (same device and inode: symlinks and hard links too)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_folder_output(path: PathLike) -> bool:
    """An output path names a folder of frames when it has no suffix or is an existing folder (FrameSink's rule)."""
    path = Path(path)
    return path.suffix == "" or path.is_dir()


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write the output to; it becomes `path` only when the block finishes without error.

    Files: a hidden `.NAME.XXXX.tmp.SUFFIX` beside the output (the suffix is kept so muxers pick the container),
    renamed over `path` at the end (through a symlink, its target is replaced). Folders: a hidden temporary folder
    beside the output; renamed to `path` when that does not exist (or is empty), otherwise its files are moved into
    the existing folder one by one at the end. On error, interrupt or SystemExit the temporary file or folder is
    removed (with any folders created for it) and nothing appears at `path`; an error naming the temporary path
    (OSError, PyAV's) is re-pointed at `path`. SIGINT and SIGTERM wait while the temporary is created, so none
    lands between its creation and the registration of its removal.
    """
    final = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    folder = is_folder_output(final)
    if folder and final.exists() and not final.is_dir():
        raise FileExistsError(errno.EEXIST, "cannot write a frame folder over an existing file", str(final))
    created = make_parents(final)
    tmp: Path | None = None
    committed = False
    try:
        with _signals_held(), output_errors(final):
            if folder:
                tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
                _default_mode(tmp)
            else:
                tmp = _temp_file(final, keep_suffix=True)
        try:
            yield tmp
        except Exception as exc:
            if getattr(exc, "filename", None) is not None and os.fspath(exc.filename).startswith(str(tmp)):
                exc.filename = str(final)
            raise
        if folder:
            _commit_folder(tmp, final)
        else:
            replace_file(tmp, final)
        committed = True
    finally:
        if not committed:
            if tmp is not None:
                _remove(tmp)
            remove_empty(created)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then they are delivered), so they cannot land between two steps
    that must both happen. Only in the main thread, where Python runs signal handlers (and where POSIX masks exist)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def output_errors(final: Path) -> Iterator[None]:
    """An OSError while the block makes what output `final` needs says so, and names `final` (not a temporary)."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the output ({exc.strerror})", str(final)) from None


def make_parents(final: Path) -> list[Path]:
    """Create the folders missing above the output `final` and return them, deepest first, for `remove_empty`
    after a failure. A file where a folder should be is named as such (mkdir would say "File exists", which
    misleads)."""
    created = []
    for parent in final.parents:
        if parent.exists():
            break
        created.append(parent)
    blocker = (created[-1] if created else final).parent
    if not blocker.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write the output ({blocker} is a file)", str(final))
    try:
        with output_errors(final):
            final.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_empty(created)
        raise
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: the folders a failed write had created."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _commit_folder(tmp: Path, final: Path) -> None:
    if final.is_dir() and any(final.iterdir()):
        _fsync_path(tmp)
        for child in sorted(tmp.iterdir()):
            os.replace(child, final / child.name)
        _fsync_dir(final)
        tmp.rmdir()
        return
    if final.is_dir():
        final.rmdir()  # rename(2) onto an empty folder is POSIX-only; make it portable
    replace_file(tmp, final)


def _remove(tmp: Path) -> None:
    try:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    except OSError as exc:  # nothing more to do; say where the leftover is
        log.warning("could not remove the temporary output %s: %s", tmp, exc)
