"""Hot instance locations in memory, so a frame request does not ask the database.

A viewer fetches every frame of a series, many at once: asking the index for the same
instance's row each time (a thread hop, a query, JSON parsing of its frame ranges) cost more
than reading the frame. Entries are plain values copied from the index row, kept for the most
recently used instances.

Why a stale entry cannot serve wrong bytes: every stored version of an instance has its own
blob key, and DELETE and overwrite remove the old blob after their index transaction. A
cached location whose instance was deleted or replaced (by this process or any other worker
on the same database) therefore points at a missing file: reading it fails, the entry is
dropped and the request goes back to the index. This process also drops entries itself when
it deletes or replaces instances.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from threading import Lock

from dicomweb.errors import DicomWebError
from dicomweb.negotiation import NATIVE_SYNTAXES, Representation, choose_frame_representation
from dicomweb.negotiation import parse_accept as _parse_accept

#: Locations kept; an entry is a few hundred bytes plus 16 bytes per frame range.
MAX_ENTRIES = 100_000
#: Instances with more frames than this are not kept (their range lists are large).
MAX_FRAMES = 4096
#: Frames at most this large are read on the event loop: a pread from the page cache costs
#: less than handing the request to a thread. Larger reads go to a thread.
INLINE_READ_BYTES = 1 << 20

Key = tuple[str, str, str]


@dataclass(frozen=True)
class HotLocation:
    """What a direct frame read needs: the file, its syntax and each frame's byte ranges."""

    blob_path: Path
    transfer_syntax_uid: str
    frames: tuple[tuple[tuple[int, int], ...], ...]
    etag: str | None = None


class LocationCache:
    """Least recently used instance locations, keyed by (study, series, SOP instance)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, HotLocation] = OrderedDict()
        self._lock = Lock()  # filled from threads, read on the event loop

    def get(self, key: Key) -> HotLocation | None:
        entry = self._entries.get(key)
        if entry is not None:
            with contextlib.suppress(KeyError):  # dropped by another thread meanwhile
                self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: HotLocation) -> None:
        if len(entry.frames) > MAX_FRAMES:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def drop_matching(self, study: str, series: str | None, sop: str | None) -> None:
        """Forget a study, series or instance (after this process deleted it)."""
        with self._lock:
            for key in [
                k for k in self._entries
                if k[0] == study and series in (None, k[1]) and sop in (None, k[2])
            ]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def hot_location(
    blob_path: Path, transfer_syntax_uid: str, frames: list[list[list[int]]] | None,
    etag: str | None = None,
) -> HotLocation | None:
    """A cache entry for an instance whose frames are stored as they are sent (no byte
    swapping, no transcoding); None otherwise."""
    if frames is None or transfer_syntax_uid == "1.2.840.10008.1.2.2":
        return None
    ranges = tuple(tuple((int(o), int(n)) for o, n in frame) for frame in frames)
    return HotLocation(blob_path, transfer_syntax_uid, ranges, etag)


@lru_cache(maxsize=256)
def direct_representation(accept: str | None, stored_syntax: str) -> Representation | None:
    """The representation of frames for this Accept header if it is the stored bytes
    themselves; None when a conversion (or a 406) is involved: the full path handles it."""
    try:
        rep = choose_frame_representation(
            _parse_accept(accept), stored_syntax, can_produce=lambda _syntax: False
        )
    except DicomWebError:
        return None
    native_as_native = stored_syntax in NATIVE_SYNTAXES and rep.transfer_syntax in NATIVE_SYNTAXES
    if rep.transfer_syntax == stored_syntax or native_as_native:
        return rep
    return None


def read_frames(entry: HotLocation, numbers: list[int]) -> list[bytes] | None:
    """The frames' bytes; None if a frame number is out of range (the full path answers)
    or the blob is gone (the instance was deleted or replaced: the caller drops the entry)."""
    if any(n > len(entry.frames) for n in numbers):
        return None
    try:
        fd = os.open(entry.blob_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        out = []
        for n in numbers:
            ranges = entry.frames[n - 1]
            out.append(b"".join(os.pread(fd, length, offset) for offset, length in ranges))
            if sum(length for _, length in ranges) != len(out[-1]):
                return None  # the file is shorter than its index says: let the full path fail
        return out
    finally:
        os.close(fd)


def inline_size(entry: HotLocation, numbers: list[int]) -> int:
    return sum(length for n in numbers for _, length in entry.frames[n - 1])
