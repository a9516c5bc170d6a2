"""multipart/related (RFC 2387): a streaming reader that writes each part to a file as it
arrives, so a 2 GB upload is never held in memory, and a writer for responses."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from dicomweb.errors import BadRequest, PayloadTooLarge

#: Bounds of what the reader holds or skips, whatever the body (RFC 2046 5.1.1): part
#: headers, the preamble and epilogue (ignored), and transport padding after a boundary.
MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_EPILOGUE_BYTES = 64 * 1024
MAX_PADDING_BYTES = 1024
CRLF = b"\r\n"


class TempFiles(Protocol):
    """Where parts go: `store.blobs` (temp files on the blob filesystem, locked while live)."""

    def new_temp_path(self) -> Path: ...

    def open_temp(self, temp_path: Path) -> BinaryIO: ...

    def discard(self, temp_path: Path) -> None: ...


@dataclass
class ReceivedPart:
    headers: dict[str, str]
    path: Path | None  # None once the part could not be written (`write_error` says why)
    size: int = 0
    write_error: OSError | None = None
    #: A small part's bytes, held until `spill` writes them to a temp file (`path` is None
    #: until then); see `read_parts(spool_bytes=…)`.
    data: bytearray | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def spill(parts: list[ReceivedPart], temp_files: TempFiles) -> None:
    """Write the held bytes of spooled parts to temp files (blocking: call it in a thread).
    A part that cannot be written gets `write_error`, as when it streamed to disk."""
    for part in parts:
        if part.data is None:
            continue
        data, part.data = part.data, None
        try:
            path = temp_files.new_temp_path()
        except OSError as exc:
            part.write_error = exc
            continue
        try:
            with temp_files.open_temp(path) as fp:
                fp.write(data)
        except OSError as exc:
            temp_files.discard(path)
            part.write_error = exc
            continue
        part.path = path


@dataclass
class _Parser:
    """A state machine over the body. Whatever the input, `buffer` holds at most a boundary's
    length plus one chunk (a part's headers at most MAX_HEADER_BYTES), and every byte is
    searched a bounded number of times: time is linear in the body, memory constant."""

    delimiter: bytes  # CRLF "--" boundary (RFC 2046 5.1.1)
    temp_files: TempFiles
    max_parts: int
    spool_bytes: int = 0  # parts up to this size are held in memory, not written here
    # The CRLF before the first delimiter belongs to it; the body may start without one.
    buffer: bytearray = field(default_factory=lambda: bytearray(CRLF))
    state: str = "preamble"  # preamble | after | headers | body | epilogue
    skipped: int = 0  # preamble or epilogue bytes seen so far
    scan_from: int = 0  # where the next search for the end of the headers starts
    parts: int = 0
    part: ReceivedPart | None = None
    file: BinaryIO | None = None

    @property
    def carry(self) -> int:
        """Bytes kept after a failed search: a delimiter may start in them."""
        return len(self.delimiter) - 1


def parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadRequest("a multipart part has a malformed header line")
        headers[name.strip().lower()] = value.strip()
    return headers


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    temp_files: TempFiles,
    *,
    max_parts: int,
    spool_bytes: int = 0,
) -> AsyncIterator[ReceivedPart]:
    """Yield each part once its body is complete on disk (the caller owns the file, and
    discards it). A part that cannot be written (disk full) is yielded with `write_error`
    set and no file.

    With `spool_bytes`, a part no larger than that is yielded with its bytes in `data` and
    no file yet: creating a file waits on the filesystem journal (for milliseconds while
    other parts are being fdatasynced), which must not stall the event loop; the caller
    `spill`s a batch of them in a thread. Larger parts go to their file as they arrive."""
    parser = _Parser(b"\r\n--" + boundary.encode("latin-1"), temp_files, max_parts,
                     spool_bytes)
    try:
        async for chunk in chunks:
            parser.buffer += chunk
            for part in _advance(parser):
                yield part
            if parser.state == "epilogue" and parser.skipped > MAX_EPILOGUE_BYTES:
                break  # the rest of the body is not read: it cannot hold another part
        for part in _advance(parser, final=True):
            yield part
    finally:
        if parser.file is not None:
            parser.file.close()
        if parser.part is not None and parser.part.path is not None:
            temp_files.discard(parser.part.path)


def _advance(p: _Parser, final: bool = False) -> Iterator[ReceivedPart]:
    while True:
        if p.state == "preamble":
            if not _skip_to_delimiter(p, MAX_PREAMBLE_BYTES):
                if final:
                    raise BadRequest("the multipart body has no boundary")
                return
        elif p.state == "after":
            if not _after_delimiter(p):
                if final:
                    raise BadRequest("the multipart body ends without its closing boundary")
                return
        elif p.state == "headers":
            if not _headers(p):
                if final:
                    raise BadRequest("the multipart body ends inside a part's headers")
                return
        elif p.state == "body":
            part = _body(p)
            if part is None:
                if final:
                    raise BadRequest("the multipart body ends inside a part")
                return
            yield part
        else:  # epilogue (RFC 2046: to be ignored)
            p.skipped += len(p.buffer)
            p.buffer.clear()
            return


def _skip_to_delimiter(p: _Parser, limit: int) -> bool:
    at = p.buffer.find(p.delimiter)
    if at < 0:
        drop = max(0, len(p.buffer) - p.carry)
        p.skipped += drop
        del p.buffer[:drop]
    else:
        p.skipped += at
        del p.buffer[: at + len(p.delimiter)]
    if p.skipped > limit:
        raise BadRequest(f"the multipart body has no boundary in its first {limit} bytes")
    if at >= 0:
        p.state = "after"
    return at >= 0


def _after_delimiter(p: _Parser) -> bool:
    """After a boundary: `--` closes the body; else optional padding, then CRLF."""
    if len(p.buffer) < 2:
        return False
    if p.buffer[:2] == b"--":
        p.state, p.skipped = "epilogue", 0
        return True
    line_end = p.buffer.find(CRLF, 0, MAX_PADDING_BYTES + 2)
    if line_end < 0:
        if len(p.buffer) > MAX_PADDING_BYTES + 2:
            raise BadRequest("a multipart boundary line is malformed")
        return False
    if p.buffer[:line_end].strip(b" \t"):
        raise BadRequest("a multipart boundary line is malformed")
    del p.buffer[:line_end]  # keep the CRLF: headers end at the first CRLF CRLF
    p.state, p.scan_from = "headers", 0
    return True


def _headers(p: _Parser) -> bool:
    end = p.buffer.find(b"\r\n\r\n", p.scan_from, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(p.buffer) > MAX_HEADER_BYTES + 4:
            raise BadRequest(f"a multipart part's headers are longer than {MAX_HEADER_BYTES} bytes")
        p.scan_from = max(0, len(p.buffer) - 3)
        return False
    headers = parse_headers(bytes(p.buffer[2:end]))
    del p.buffer[: end + 4]
    p.parts += 1
    if p.parts > p.max_parts:
        raise PayloadTooLarge(
            f"the request has more than {p.max_parts} parts (DICOMWEB_MAX_PARTS)"
        )
    if p.spool_bytes > 0:
        p.part = ReceivedPart(headers, None, data=bytearray())
    else:
        _open_file(p, ReceivedPart(headers, None))
    p.state = "body"
    return True


def _open_file(p: _Parser, part: ReceivedPart) -> None:
    """The part's temp file, holding what was spooled of it so far."""
    p.part = part
    spooled, part.data = part.data, None
    try:
        part.path = p.temp_files.new_temp_path()
    except OSError as exc:  # no room even for an empty file
        part.write_error = exc
        return
    try:
        p.file = p.temp_files.open_temp(part.path)
        if spooled:
            p.file.write(spooled)
    except OSError as exc:
        _write_failed(p, exc)


def _body(p: _Parser) -> ReceivedPart | None:
    assert p.part is not None
    at = p.buffer.find(p.delimiter)
    end = at if at >= 0 else max(0, len(p.buffer) - p.carry)
    _write(p, end)
    if at < 0:
        del p.buffer[:end]
        return None
    del p.buffer[: at + len(p.delimiter)]
    if p.file is not None:
        p.file.close()
        p.file = None
    part, p.part = p.part, None
    p.state = "after"
    return part


def _write(p: _Parser, end: int) -> None:
    assert p.part is not None
    if end == 0:
        return
    if p.part.data is not None:
        if len(p.part.data) + end <= p.spool_bytes:
            p.part.data += p.buffer[:end]
            p.part.size += end
            return
        _open_file(p, p.part)  # too large to hold: to its file from here on
    if p.file is None:
        return  # a part that failed to write is read to its end and dropped
    try:
        with memoryview(p.buffer) as view:
            p.file.write(view[:end])
        p.part.size += end
    except OSError as exc:
        _write_failed(p, exc)


def _write_failed(p: _Parser, exc: OSError) -> None:
    assert p.part is not None
    if p.file is not None:
        with contextlib.suppress(OSError):
            p.file.close()
        p.file = None
    if p.part.path is not None:
        p.temp_files.discard(p.part.path)
    p.part.path, p.part.write_error = None, exc


# --- writing ---------------------------------------------------------------------------


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_content_type(
    part_type: str, boundary: str, transfer_syntax: str | None = None
) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_header(boundary: str, headers: dict[str, str]) -> bytes:
    lines = [f"--{boundary}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def encode_parts(boundary: str, parts: Iterable[tuple[dict[str, str], bytes]]) -> bytes:
    """One body, each part's bytes copied once (growing a bytearray and copying it out would
    copy a frame two or three times)."""
    pieces: list[bytes] = []
    for headers, body in parts:
        pieces += (part_header(boundary, headers), body, b"\r\n")
    pieces.append(closing(boundary))
    return b"".join(pieces)
