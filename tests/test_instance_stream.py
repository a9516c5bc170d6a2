"""The streamed body of a retrieve (dicomweb.instance_stream): exact length, bounded
buffers, every body closed, bytes from the page cache or the disk alike, and a body shorter
than announced never sent as if whole."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from dicomweb.instance_stream import NOWAIT, Segment, content_length, file_segment, stream


def open_files(tmp_path: Path, sizes: list[int]) -> list[io.FileIO]:
    files = []
    for number, size in enumerate(sizes):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(bytes((number + k) % 251 for k in range(size)))
        files.append(path.open("rb", buffering=0))
    return files


def collect(segments: list[Segment], buffer_bytes: int) -> list[bytes]:
    async def run() -> list[bytes]:
        return [bytes(view) async for view in stream(segments, buffer_bytes)]

    return asyncio.run(run())


def test_the_stream_is_the_segments_in_order_in_bounded_buffers(tmp_path: Path):
    files = open_files(tmp_path, [0, 1, 1000, 4096, 70_000])
    spooled = io.BytesIO(b"transcoded" * 300)
    segments, expected = [Segment(b"--head\r\n")], b"--head\r\n"
    for fp in files:
        segments += [file_segment(fp), Segment(b"\r\n")]
        expected += Path(fp.name).read_bytes() + b"\r\n"
    segments += [file_segment(spooled), Segment(b"--end--\r\n")]
    expected += spooled.getvalue() + b"--end--\r\n"

    buffers = collect(segments, buffer_bytes=4000)

    assert b"".join(buffers) == expected
    assert content_length(segments) == len(expected)
    assert all(0 < len(b) <= 4000 for b in buffers)
    assert all(len(b) == 4000 for b in buffers[:-1])
    assert all(fp.closed for fp in files) and spooled.closed


def test_files_not_in_the_page_cache_are_read_whole(tmp_path: Path):
    """Reads that would wait for the disk go to a thread; the bytes are the same."""
    files = open_files(tmp_path, [300_000, 5000])
    for fp in files:
        os.fsync(fp.fileno())
        os.posix_fadvise(fp.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # drop the cached pages
    expected = b"".join(Path(fp.name).read_bytes() for fp in files)
    for fp in files:
        os.posix_fadvise(fp.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if NOWAIT is not None:
        with pytest.raises(BlockingIOError):
            os.preadv(files[0].fileno(), [bytearray(1000)], 200_000, NOWAIT)
    assert b"".join(collect([file_segment(fp) for fp in files], 64 * 1024)) == expected


def test_a_body_is_read_from_its_start_whatever_its_position(tmp_path: Path):
    (fp,) = open_files(tmp_path, [5000])
    segment = file_segment(fp)
    fp.read(1234)
    assert b"".join(collect([segment], 1 << 20)) == (tmp_path / "0.dcm").read_bytes()


def test_a_file_shorter_than_when_it_was_opened_raises(tmp_path: Path):
    """A truncated stored file must cut the connection short of its Content-Length (which
    the client detects), not end a well-formed body with the wrong bytes."""
    (fp,) = open_files(tmp_path, [10_000])
    segment = file_segment(fp)
    with open(tmp_path / "0.dcm", "r+b") as other:
        other.truncate(6000)
    with pytest.raises(OSError, match="4000 bytes early"):
        collect([Segment(b"head"), segment], buffer_bytes=3000)
    assert fp.closed


def test_nothing_to_send_is_an_empty_stream():
    assert collect([], 1 << 20) == []
    assert collect([Segment(b"")], 1 << 20) == []
