"""HTTP validation and caching: ETags, `If-None-Match` → 304, `Cache-Control`, and a
byte-bounded cache of response bodies keyed by content version.

RFC 9110 8.8.3 (ETag), 13.1.2 (If-None-Match, weak comparison), RFC 9111 5.2.2 (no-cache).
Stored instances can be overwritten (DICOMWEB_DUPLICATES=overwrite) or deleted, and series grow,
so nothing is `immutable`: clients keep what they fetched and revalidate it every time
(`no-cache`), which costs them a 304 without a body while nothing changed. Patient data is
`private`: a shared cache must not keep it. Every ETag is derived from the blob keys of the
instances a response is made of (each stored version has its own key), never from a clock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from threading import Lock

from starlette.requests import Request
from starlette.responses import Response

#: Reads of stored content: keep, but ask again (If-None-Match) before each use.
REVALIDATE = "private, no-cache"
#: Answers to STOW and DELETE, and anything else that must not be kept.
NO_STORE = "no-store"


def etag_of(parts: Iterable[str]) -> str:
    """A weak validator (multipart boundaries differ between equal answers) of the parts."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=12)
    return f'W/"{digest.hexdigest()}"'


def matches(request: Request, etag: str) -> bool:
    """If-None-Match with the weak comparison of RFC 9110 13.1.2 (W/ prefixes ignored)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def validator_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": REVALIDATE}


def not_modified(etag: str, vary: str | None = None) -> Response:
    headers = validator_headers(etag)
    if vary:
        headers["Vary"] = vary
    return Response(status_code=304, headers=headers)


#: A cached answer: its body and its Content-Encoding (None: as it is).
Cached = tuple[bytes, str | None]


class BodyCache:
    """Least recently used response bodies within a byte budget (0: keep nothing)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[tuple[str, ...], Cached] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[str, ...]) -> Cached | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, ...], value: Cached) -> None:
        if len(value[0]) > self.max_bytes // 4:  # one answer never takes most of the budget
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= len(old[0])
            self._entries[key] = value
            self.size += len(value[0])
            while self.size > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self.size -= len(evicted[0])
