"""Keeping stdout clean: under `vspipe ... -`, file descriptor 1 is the video stream."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["stdout_to_stderr"]

_lock = threading.Lock()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Redirect fd 1 (and sys.stdout) to stderr for the duration, so libraries that print (torch, TensorRT, tqdm
    misconfigured by a user) cannot corrupt a y4m stream. Safe when sys.stdout is None (mpv, pythonw)."""
    with _lock:
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 at all
            yield
            return
        try:
            if sys.stdout is not None:
                try:
                    sys.stdout.flush()
                except (OSError, ValueError):
                    pass
            os.dup2(2, 1)
            old_stdout, sys.stdout = sys.stdout, sys.stderr
            try:
                yield
            finally:
                sys.stdout = old_stdout
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 1)
        finally:
            os.close(saved)
