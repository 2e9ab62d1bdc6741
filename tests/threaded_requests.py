"""Frames requested from many Python threads at once (engine `render` or VapourSynth `get_frame`): every result
kept, a repeated request must give the same result, an exception in any thread fails the test, and a hang becomes
a failure after `timeout` seconds instead of blocking the suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def same(a: Any, b: Any) -> bool:
    """Equality for frames (arrays, bit for bit), tuples of them, and plain values (props dicts)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def request_concurrently(get: Callable[[int], Any], order: Sequence[int], threads: int, timeout: float = 600.0) -> dict[int, Any]:
    """get(n) for every n of `order`, split round-robin over `threads` threads; returns {n: result}."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(ns: Sequence[int]) -> None:
        try:
            for n in ns:
                value = get(n)
                with lock:
                    if n in results and not same(results[n], value):
                        raise AssertionError(f"frame {n}: a repeated request gave a different result")
                    results[n] = value
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(order[i::threads],), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + timeout
    for t in pool:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in pool), f"deadlock: requests did not finish within {timeout:.0f} s"
    if errors:
        raise errors[0]
    return results
