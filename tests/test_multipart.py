"""The multipart/related reader (RFC 2046 5.1): bounded in every state, linear, and leaving
no temp file behind whatever ends the body."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from dicomweb.errors import BadRequest, PayloadTooLarge
from dicomweb.multipart import (
    MAX_HEADER_BYTES,
    MAX_PADDING_BYTES,
    MAX_PREAMBLE_BYTES,
    ReceivedPart,
    encode_parts,
    read_parts,
    spill,
)
from dicomweb.store.blobs import BlobStore

BOUNDARY = "b0undary"
CHUNK = 64 * 1024


class Feed:
    """An async body that counts how much of it the reader pulled."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += len(chunk)
            yield chunk


def repeated(piece: bytes, total: int) -> Iterable[bytes]:
    for _ in range(total // len(piece)):
        yield piece


def read_all(feed: Feed, blobs: BlobStore, max_parts: int = 100) -> list[tuple[dict, bytes]]:
    async def run() -> list[tuple[dict, bytes]]:
        out = []
        async for part in read_parts(feed, BOUNDARY, blobs, max_parts=max_parts):
            assert part.path is not None
            out.append((part.headers, part.path.read_bytes()))
            blobs.discard(part.path)
        return out

    return asyncio.run(run())


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "blobs")
    store.create_folders()  # the constructor creates nothing
    return store


def temp_files(blobs: BlobStore) -> list[Path]:
    return list(blobs.tmp_dir.iterdir())


def body_of(parts: list[bytes]) -> bytes:
    return encode_parts(BOUNDARY, [({"Content-Type": "application/dicom"}, p) for p in parts])


def test_parts_are_the_same_whatever_the_chunking(blobs: BlobStore) -> None:
    payloads = [b"first", b"\r\n--b0undar not a boundary\r\n", b"", bytes(range(256)) * 40]
    body = b"preamble text\r\n" + body_of(payloads) + b"epilogue"
    for size in (1, 2, 3, 7, 13, 64, 1000, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        parts = read_all(Feed(chunks), blobs)
        assert [data for _, data in parts] == payloads, size
        assert all(h == {"content-type": "application/dicom"} for h, _ in parts)
    assert temp_files(blobs) == []


def test_part_without_headers_and_transport_padding(blobs: BlobStore) -> None:
    body = f"--{BOUNDARY}  \t\r\n\r\nbare\r\n--{BOUNDARY}--".encode()
    assert read_all(Feed([body]), blobs) == [({}, b"bare")]


def test_body_without_boundary_is_rejected_after_the_preamble_cap(blobs: BlobStore) -> None:
    # Formerly every chunk was appended and the whole body searched again (1 GiB: 350 s).
    feed = Feed(repeated(b"x" * CHUNK, 256 << 20))
    with pytest.raises(BadRequest, match="no boundary"):
        read_all(feed, blobs)
    assert feed.pulled <= MAX_PREAMBLE_BYTES + 2 * CHUNK


def test_no_line_break_after_a_boundary_is_rejected_early(blobs: BlobStore) -> None:
    feed = Feed([f"--{BOUNDARY}".encode(), *repeated(b"y" * CHUNK, 192 << 20)])
    with pytest.raises(BadRequest, match="boundary line"):
        read_all(feed, blobs)
    assert feed.pulled <= MAX_PADDING_BYTES + 2 * CHUNK


def test_endless_headers_are_rejected(blobs: BlobStore) -> None:
    feed = Feed([f"--{BOUNDARY}\r\nX: ".encode(), *repeated(b"h" * 1024, 64 << 20)])
    with pytest.raises(BadRequest, match="headers are longer"):
        read_all(feed, blobs)
    assert feed.pulled <= MAX_HEADER_BYTES + 4096


def test_epilogue_is_not_read_past_its_cap(blobs: BlobStore) -> None:
    feed = Feed([body_of([b"one"]), *repeated(b"e" * CHUNK, 64 << 20)])
    assert [data for _, data in read_all(feed, blobs)] == [b"one"]
    assert feed.pulled <= 4 * CHUNK


def test_part_count_is_capped(blobs: BlobStore) -> None:
    with pytest.raises(PayloadTooLarge, match="DICOMWEB_MAX_PARTS"):
        read_all(Feed([body_of([b"a", b"b", b"c", b"d"])]), blobs, max_parts=3)
    assert temp_files(blobs) == []


def test_one_part_of_64_mib_is_streamed_with_bounded_memory(blobs: BlobStore) -> None:
    import tracemalloc

    payload_size = 64 << 20
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    async def run() -> ReceivedPart:
        feed = Feed([head, *repeated(b"\x01" * CHUNK, payload_size), tail])
        async for part in read_parts(feed, BOUNDARY, blobs, max_parts=1):
            return part
        raise AssertionError("no part")

    tracemalloc.start()
    part = asyncio.run(run())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert part.size == payload_size
    assert peak < 4 * CHUNK + (1 << 20)


@pytest.mark.parametrize("cut", [5, 40, 80])
def test_cut_body_removes_the_part_being_written(blobs: BlobStore, cut: int) -> None:
    body = body_of([b"z" * 100])[:cut]
    with pytest.raises(BadRequest):
        read_all(Feed([body]), blobs)
    assert temp_files(blobs) == []


def test_disconnect_removes_the_part_being_written(blobs: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield body_of([b"done"])[:-10] + b"more bytes of a second part"
        raise ConnectionResetError("client went away")

    async def run() -> None:
        async for part in read_parts(broken(), BOUNDARY, blobs, max_parts=10):
            assert part.path is not None
            blobs.discard(part.path)

    with pytest.raises(ConnectionResetError):
        asyncio.run(run())
    assert temp_files(blobs) == []


class FullDisk(BlobStore):
    """Temp files that take no byte: every write fails as on a full filesystem."""

    def new_temp_path(self) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_part_that_cannot_be_written_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    blobs = FullDisk(tmp_path / "blobs")
    blobs.create_folders()

    async def run() -> list[ReceivedPart]:
        feed = Feed([body_of([b"a" * 1000, b"b" * 1000])])
        return [part async for part in read_parts(feed, BOUNDARY, blobs, max_parts=10)]

    parts = asyncio.run(run())
    assert len(parts) == 2
    assert all(p.path is None and p.write_error.errno == errno.ENOSPC for p in parts)


def test_small_parts_are_held_in_memory_until_spilled(blobs: BlobStore) -> None:
    """With spool_bytes, the event loop creates no file for a small part: its bytes are held
    (whatever the chunking) and `spill` writes them; a larger part goes to its file as it
    arrives, the bytes held before it grew past the limit included."""
    payloads = [b"small", bytes(range(256)) * 4, b"", bytes(range(256)) * 40]
    body = body_of(payloads)

    async def run(chunk: int) -> list[ReceivedPart]:
        feed = Feed(body[i : i + chunk] for i in range(0, len(body), chunk))
        return [part async for part in read_parts(feed, BOUNDARY, blobs, max_parts=10,
                                                  spool_bytes=2048)]

    for chunk in (1, 7, 1000, len(body)):
        parts = asyncio.run(run(chunk))
        assert [p.path is None and p.data is not None for p in parts] == [True, True, True, False]
        assert len(temp_files(blobs)) == 1  # the large part's only
        assert [p.size for p in parts] == [len(x) for x in payloads]
        spill(parts, blobs)
        assert all(p.data is None and p.path is not None for p in parts)
        assert [p.path.read_bytes() for p in parts] == payloads
        for part in parts:
            blobs.discard(part.path)
        assert temp_files(blobs) == []


def test_a_spooled_part_that_cannot_be_written_is_reported(tmp_path: Path) -> None:
    blobs = FullDisk(tmp_path / "blobs")
    blobs.create_folders()
    parts = [ReceivedPart({}, None, data=bytearray(b"abc"))]
    spill(parts, blobs)
    assert parts[0].path is None and parts[0].write_error.errno == errno.ENOSPC
