"""A thread-safe LRU cache of decoded tiles, bounded in bytes.

Neighbouring chunks of a tiled volume share tiles; the cache keeps the most recently used
decoded tiles so each is decoded once while it stays hot. Concurrent requests for the same
missing key are coalesced: one thread decodes, the others wait for its result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


class _Pending:
    """A decode in flight: waiters block on ``event`` and then read ``value`` or ``error``."""

    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None


class TileCache:
    """LRU map ``key -> read-only ndarray`` holding at most ``max_bytes`` bytes of arrays.

    Invariant: ``nbytes <= max_bytes`` at all times. An array larger than ``max_bytes`` is
    returned to the caller but not stored. ``max_bytes=0`` disables storing (coalescing of
    concurrent loads still applies).

    Attributes:
        hits: lookups answered from the cache (or by waiting on another thread's load).
        misses: lookups that ran the loader.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array (marked most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> bool:
        """Store ``value`` (made read-only), evicting LRU entries; False if it is too large."""
        with self._lock:
            return self._put_locked(key, value)

    def _put_locked(self, key: Hashable, value: np.ndarray) -> bool:
        size = int(value.nbytes)
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= int(old.nbytes)
        if size > self.max_bytes:
            return False
        while self.nbytes + size > self.max_bytes:
            _, evicted = self._data.popitem(last=False)
            self.nbytes -= int(evicted.nbytes)
            self.evictions += 1
        value.flags.writeable = False
        self._data[key] = value
        self.nbytes += size
        return True

    def get_or_load(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``key``, else ``load()``'s result (stored if it fits).

        If another thread is already loading ``key``, wait for its result instead of loading
        twice; if that load raises, the waiters raise the same exception.
        """
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return value
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
                self.misses += 1
            else:
                self.hits += 1
        assert pending is not None
        if not owner:
            pending.event.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.value is not None
            return pending.value
        try:
            value = load()
        except BaseException as err:
            with self._lock:
                del self._pending[key]
            pending.error = err
            pending.event.set()
            raise
        with self._lock:
            self._put_locked(key, value)
            del self._pending[key]
        value.flags.writeable = False
        pending.value = value
        pending.event.set()
        return value

    def clear(self) -> None:
        """Drop every entry (statistics are kept)."""
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def info(self) -> dict[str, Any]:
        """``{'hits', 'misses', 'evictions', 'entries', 'nbytes', 'max_bytes'}``."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._data),
                "nbytes": self.nbytes,
                "max_bytes": self.max_bytes,
            }
