"""multipart/related (RFC 2387): a streaming reader that writes each part to a file as it
arrives, so a 2 GB upload is never held in memory, and a writer for responses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dicomweb.errors import BadRequest

MAX_HEADER_BYTES = 16 * 1024


@dataclass
class ReceivedPart:
    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class _Parser:
    boundary: bytes
    new_path: Callable[[], Path]
    buffer: bytearray = field(default_factory=bytearray)
    state: str = "preamble"  # preamble | headers | body | done
    part: ReceivedPart | None = None
    file: BinaryIO | None = None


def parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"malformed part header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


async def read_parts(
    chunks: AsyncIterator[bytes], boundary: str, new_path: Callable[[], Path]
) -> AsyncIterator[ReceivedPart]:
    """Yield each part once its body is complete on disk (the caller owns the file)."""
    parser = _Parser(boundary.encode("latin-1"), new_path)
    delimiter = b"\r\n--" + parser.boundary
    try:
        async for chunk in chunks:
            parser.buffer += chunk
            for part in _advance(parser, delimiter):
                yield part
            if parser.state == "done":
                break
        for part in _advance(parser, delimiter, final=True):
            yield part
        if parser.state != "done":
            raise BadRequest("multipart body ends before its closing boundary")
    finally:
        if parser.file is not None:
            parser.file.close()
            if parser.part is not None:
                parser.part.path.unlink(missing_ok=True)


def _advance(p: _Parser, delimiter: bytes, final: bool = False) -> Iterator[ReceivedPart]:
    while True:
        if p.state == "preamble":
            # The first boundary may open the body without a leading CRLF.
            opener = b"--" + p.boundary
            at = 0 if p.buffer.startswith(opener) else p.buffer.find(b"\r\n" + opener)
            if at < 0:
                if final:
                    raise BadRequest("multipart body has no boundary")
                return
            start = at + len(opener) + (0 if at == 0 and p.buffer.startswith(opener) else 2)
            if len(p.buffer) < start + 2:
                return
            del p.buffer[:start]
            if not _after_delimiter(p):
                return
        elif p.state == "headers":
            end = p.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(p.buffer) > MAX_HEADER_BYTES:
                    raise BadRequest("multipart part headers are too long")
                if final:
                    raise BadRequest("multipart part headers are cut")
                return
            headers = parse_headers(bytes(p.buffer[:end]))
            del p.buffer[: end + 4]
            p.part = ReceivedPart(headers, p.new_path())
            p.file = p.part.path.open("wb")
            p.state = "body"
        elif p.state == "body":
            assert p.file is not None and p.part is not None
            at = p.buffer.find(delimiter)
            if at < 0:
                keep = len(delimiter) - 1
                if len(p.buffer) > keep:
                    flush = len(p.buffer) - keep
                    p.file.write(p.buffer[:flush])
                    p.part.size += flush
                    del p.buffer[:flush]
                if final:
                    raise BadRequest("multipart part is cut before its boundary")
                return
            p.file.write(p.buffer[:at])
            p.part.size += at
            p.file.close()
            p.file = None
            part, p.part = p.part, None
            del p.buffer[: at + len(delimiter)]
            p.state = "after"
            yield part
        elif p.state == "after":
            if not _after_delimiter(p):
                if final:
                    raise BadRequest("multipart body ends after a boundary")
                return
        else:
            return


def _after_delimiter(p: _Parser) -> bool:
    """After a boundary: `--` closes the body, CRLF (after optional padding) opens a part."""
    if len(p.buffer) < 2:
        p.state = "after"
        return False
    if p.buffer[:2] == b"--":
        p.state = "done"
        p.buffer.clear()
        return True
    line_end = p.buffer.find(b"\r\n")
    if line_end < 0:
        p.state = "after"
        return False
    if p.buffer[:line_end].strip(b" \t"):
        raise BadRequest("malformed multipart boundary line")
    del p.buffer[: line_end + 2]
    p.state = "headers"
    return True


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
    out = bytearray()
    for headers, body in parts:
        out += part_header(boundary, headers)
        out += body
        out += b"\r\n"
    out += closing(boundary)
    return bytes(out)
