"""The body of a study, series or instance retrieve, streamed with its exact length.

Every body (a stored file, or a transcoding spooled before the status line) is open before
the response starts, so its size is known: the response carries a Content-Length instead of
chunked encoding. A client can then tell a complete body from a cut one, and the server
skips chunk framing, which in uvicorn copies every chunk once more.

The bytes go out in fresh buffers of about BUFFER_BYTES, each filled by `readinto` straight
from the open files, headers between them: one copy from the page cache, one thread hop per
buffer (not per instance), and bounded memory whatever the series' size. A buffer is never
reused: the transport may still hold the previous one when the next is filled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: Bytes per buffer handed to the server: large enough that the per-buffer cost (a thread
#: hop, the middleware's send wrappers, a socket write) is small against the copy.
BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class Segment:
    """Fixed bytes (a part's headers, a CRLF, the closing delimiter) or an open body."""

    data: bytes = b""
    body: BinaryIO | None = None
    size: int = 0

    @property
    def length(self) -> int:
        return self.size if self.body is not None else len(self.data)


def body_size(fp: BinaryIO) -> int:
    """Size of an open file or in-memory spool; the position is left at its start."""
    size = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    return size


def file_segment(fp: BinaryIO) -> Segment:
    return Segment(body=fp, size=body_size(fp))


def content_length(segments: list[Segment]) -> int:
    return sum(segment.length for segment in segments)


def stream(segments: list[Segment], buffer_bytes: int = BUFFER_BYTES) -> Iterator[memoryview]:
    """The segments' bytes in order, in buffers of at most `buffer_bytes`; every body is
    closed at the end. A body shorter than its size when it was opened raises OSError: the
    connection then stops short of its Content-Length, which the client detects, instead of
    ending a well-formed but wrong answer."""
    remaining = content_length(segments)
    buffer, filled = bytearray(min(buffer_bytes, remaining)), 0
    try:
        for segment in segments:
            if segment.body is not None:
                segment.body.seek(0)
            offset = 0
            while offset < segment.length:
                count = min(len(buffer) - filled, segment.length - offset)
                window = memoryview(buffer)[filled : filled + count]
                if segment.body is None:
                    window[:] = segment.data[offset : offset + count]
                elif (got := read_into(segment.body, window)) < count:
                    missing = segment.length - offset - got
                    raise OSError(f"a stored file ended {missing} bytes early")
                offset, filled, remaining = offset + count, filled + count, remaining - count
                if filled == len(buffer):
                    yield memoryview(buffer)
                    buffer, filled = bytearray(min(buffer_bytes, remaining)), 0
    finally:
        for segment in segments:
            if segment.body is not None:
                segment.body.close()


def read_into(fp: BinaryIO, target: memoryview) -> int:
    """Fill `target` from `fp`; fewer bytes only at the end of the file."""
    done = 0
    while done < len(target):
        count = fp.readinto(target[done:])  # type: ignore[attr-defined]
        if not count:
            break
        done += count
    return done
