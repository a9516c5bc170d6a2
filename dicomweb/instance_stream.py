"""The body of a study, series or instance retrieve, streamed with its exact length.

Every body (a stored file, or a transcoding spooled before the status line) is open before
the response starts, so its size is known: the response carries a Content-Length instead of
chunked encoding. A client can then tell a complete body from a cut one, and the server
skips chunk framing, which in uvicorn copies every chunk once more.

The bytes go out in fresh buffers of about BUFFER_BYTES, filled straight from the open files
(one copy from the page cache) with the part headers between them; memory per request stays
one buffer whatever the series' size. A buffer is never reused: the transport may still hold
the previous one while the next is filled. Buffers are allocated uninitialised (numpy.empty;
a zeroed bytearray costs 13 µs a MiB, 4% of a retrieve) and only ever sent whole: `fill`
either completes a buffer or raises.

Where the bytes are read: a page-cache read of a buffer costs less than handing it to a
thread (the hand-off and the GIL's back and forth were a sixth of a retrieve's CPU), so each
buffer is first filled on the event loop with `RWF_NOWAIT` reads, which copy only what is
cached and never wait for the disk; whatever is not cached is read in a worker thread.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from starlette.concurrency import run_in_threadpool

#: Bytes per buffer handed to the server: large enough that the per-buffer cost (the
#: middleware's send wrappers, a socket write, a thread hop when not cached) is small
#: against the copy; small enough to stay within the CPU's caches.
BUFFER_BYTES = 1 << 20
#: preadv flag: return what the page cache holds instead of waiting (Linux 4.14+).
NOWAIT = getattr(os, "RWF_NOWAIT", None)
#: A file system that cannot read without waiting says so with these: read in a thread.
_WOULD_WAIT = (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL)


@dataclass(frozen=True)
class Segment:
    """Fixed bytes (a part's headers, a CRLF, the closing delimiter) or an open body."""

    data: bytes = b""
    body: BinaryIO | None = None
    size: int = 0
    fd: int | None = None  # the body's file descriptor; None for an in-memory spool

    @property
    def length(self) -> int:
        return self.size if self.body is not None else len(self.data)


def file_segment(fp: BinaryIO) -> Segment:
    """An open stored file or spool, with its size now (it is sent whole, from its start)."""
    try:
        fd: int | None = fp.fileno()
    except io.UnsupportedOperation:
        fd = None
    size = fp.seek(0, os.SEEK_END)
    return Segment(body=fp, size=size, fd=fd)


def content_length(segments: list[Segment]) -> int:
    return sum(segment.length for segment in segments)


async def stream(segments: list[Segment], buffer_bytes: int = BUFFER_BYTES
                 ) -> AsyncIterator[memoryview]:
    """The segments' bytes in order, in buffers of at most `buffer_bytes`; every body is
    closed at the end. A body shorter than its size when it was opened raises OSError: the
    connection then stops short of its Content-Length, which the client detects, instead of
    ending a well-formed but wrong answer."""
    cursor = Cursor(segments)
    try:
        while cursor.remaining:
            buffer = memoryview(np.empty(min(buffer_bytes, cursor.remaining), np.uint8))
            filled = cursor.fill(buffer, 0, nowait=True)
            if filled < len(buffer):
                await run_in_threadpool(cursor.fill, buffer, filled, False)
            yield buffer
    finally:
        for segment in segments:
            if segment.body is not None:
                segment.body.close()


class Cursor:
    """How far the stream has come: a segment and the offset in it."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.index = 0
        self.offset = 0
        self.remaining = content_length(segments)

    def fill(self, buffer: memoryview, start: int, nowait: bool) -> int:
        """Copy the next bytes into `buffer[start:]`; where it stopped: the buffer's end, or
        earlier when `nowait` and the next bytes are not in the page cache."""
        view, filled = buffer, start
        while filled < len(buffer):
            segment = self.segments[self.index]
            count = min(len(buffer) - filled, segment.length - self.offset)
            got = copy_into(segment, view[filled : filled + count], self.offset, nowait)
            filled, self.offset, self.remaining = (
                filled + got, self.offset + got, self.remaining - got)
            if self.offset == segment.length:
                self.index, self.offset = self.index + 1, 0
            elif got < count:
                if nowait:
                    return filled
                missing = segment.length - self.offset
                raise OSError(f"a stored file ended {missing} bytes early")
        return filled


def copy_into(segment: Segment, target: memoryview, offset: int, nowait: bool) -> int:
    """Bytes of `segment` from `offset` into `target`: all of them, fewer at the end of a
    file, or (nowait) only as many as the page cache holds."""
    if segment.body is None:
        target[:] = segment.data[offset : offset + len(target)]
        return len(target)
    if segment.fd is None:  # an in-memory spool: never waits
        segment.body.seek(offset)
        return read_into(segment.body, target)
    if nowait:
        return read_cached(segment.fd, target, offset)
    segment.body.seek(offset)
    return read_into(segment.body, target)


def read_cached(fd: int, target: memoryview, offset: int) -> int:
    if NOWAIT is None:
        return 0
    done = 0
    while done < len(target):
        try:
            count = os.preadv(fd, [target[done:]], offset + done, NOWAIT)
        except OSError as exc:
            if exc.errno in _WOULD_WAIT:
                break
            raise
        if not count:
            break
        done += count
    return done


def read_into(fp: BinaryIO, target: memoryview) -> int:
    """Fill `target` from `fp`; fewer bytes only at the end of the file."""
    done = 0
    while done < len(target):
        count = fp.readinto(target[done:])  # type: ignore[attr-defined]
        if not count:
            break
        done += count
    return done
