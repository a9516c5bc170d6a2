"""A small thread-safe cache whose entries expire: credentials checked against the database
are trusted for `credential_cache_seconds`, so the hot path asks the database rarely."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")
MISSING = object()


class ExpiringCache(Generic[V]):
    def __init__(self, seconds: float, max_entries: int = 4096) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        if self.seconds <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            until, value = found
            if until <= now:
                del self._entries[key]
                return None
            return value

    def get_many(self, keys: list[str]) -> list[V | None]:
        """`get` of each key, under one lock and one clock reading (a search's studies)."""
        if self.seconds <= 0:
            return [None] * len(keys)
        now = time.monotonic()
        values: list[V | None] = []
        with self._lock:
            for key in keys:
                found = self._entries.get(key)
                if found is not None and found[0] <= now:
                    del self._entries[key]
                    found = None
                values.append(None if found is None else found[1])
        return values

    def put(self, key: str, value: V, seconds: float | None = None) -> None:
        """Keep `value` for the cache's time, or `seconds` if shorter."""
        life = self.seconds if seconds is None else min(self.seconds, seconds)
        if life <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + life, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
