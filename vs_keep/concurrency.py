"""Thread-safe pieces the engine shares between the threads that call it (VapourSynth workers): work counters,
a cache that never makes a caller wait on another, and the lock that serialises model runs on one device."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

__all__ = ["Counters", "LRUCache", "model_lock"]


class Counters:
    """Work counters (model steps, plans, detections), safe to bump from many threads."""

    def __init__(self, *names: str) -> None:
        self._values = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    def add(self, name: str, k: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + k

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class LRUCache:
    """Thread-safe LRU without futures: `get` never waits on anyone; `put` keeps the first value stored for a key
    (so concurrent misses end up sharing one object). With `weak`, values still referenced elsewhere (work in
    flight) stay reachable after leaving the LRU, so eviction never loses work someone is still doing. capacity
    None: unbounded (the runs of one chunk's tracks)."""

    def __init__(self, capacity: int | None, *, weak: bool = False) -> None:
        self.capacity = None if capacity is None else max(1, int(capacity))
        self._items: OrderedDict[object, object] = OrderedDict()
        self._live: weakref.WeakValueDictionary | None = weakref.WeakValueDictionary() if weak else None
        self._lock = threading.Lock()

    def _lookup(self, key: object) -> object | None:
        value = self._items.get(key)
        if value is None and self._live is not None:
            value = self._live.get(key)
        return value

    def _store(self, key: object, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if self._live is not None:
            self._live[key] = value
        while self.capacity is not None and len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._lookup(key)
            if value is not None:
                self._store(key, value)
            return value

    def put(self, key: object, value: object) -> object:
        with self._lock:
            existing = self._lookup(key)
            if existing is not None:
                value = existing
            self._store(key, value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            if self._live is not None:
                self._live.clear()


_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def model_lock(device: str | None) -> threading.Lock:
    """The lock that serialises model runs on one device (shared by every engine in the process)."""
    key = str(device or "cpu")
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(key, threading.Lock())
