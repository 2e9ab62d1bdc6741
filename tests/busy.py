"""Load for determinism tests: busy processes on every core for the whole test, so nothing that decides pixels
can hide behind a quiet machine (timing, scheduling, thread pools that size themselves by load).

`with busy_cores(): ...` or the `under_load` fixture (`from busy import under_load` in a test module)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

__all__ = ["busy_cores", "under_load"]


@contextlib.contextmanager
def busy_cores(count: int | None = None) -> Iterator[list[int]]:
    """`count` (default: one per core) processes spinning in a Python loop until the block ends; yields their pids.
    They run at nice 10: every core stays busy (the test's threads are preempted and rescheduled all the time),
    while the test itself still gets most of the CPU, so it does not take twice as long."""
    procs = [subprocess.Popen([sys.executable, "-c", "import os; os.nice(10)\nwhile True: pass"], stdin=subprocess.DEVNULL)
             for _ in range(count or os.cpu_count() or 2)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture
def under_load() -> Iterator[list[int]]:
    """Busy processes on every core for the duration of the test."""
    with busy_cores() as pids:
        yield pids
