"""The streamed body of a retrieve (dicomweb.instance_stream): exact length, bounded
buffers, every body closed, a body shorter than announced never sent as if whole."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dicomweb.instance_stream import Segment, content_length, file_segment, stream


def open_files(tmp_path: Path, sizes: list[int]) -> list[io.FileIO]:
    files = []
    for number, size in enumerate(sizes):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(bytes((number + k) % 251 for k in range(size)))
        files.append(path.open("rb", buffering=0))
    return files


def test_the_stream_is_the_segments_in_order_in_bounded_buffers(tmp_path: Path):
    files = open_files(tmp_path, [0, 1, 1000, 4096, 70_000])
    spooled = io.BytesIO(b"transcoded" * 300)
    segments, expected = [Segment(b"--head\r\n")], b"--head\r\n"
    for fp in files:
        segments += [file_segment(fp), Segment(b"\r\n")]
        expected += Path(fp.name).read_bytes() + b"\r\n"
    segments += [file_segment(spooled), Segment(b"--end--\r\n")]
    expected += spooled.getvalue() + b"--end--\r\n"

    buffers = [bytes(view) for view in stream(segments, buffer_bytes=4000)]

    assert b"".join(buffers) == expected
    assert content_length(segments) == len(expected)
    assert all(0 < len(b) <= 4000 for b in buffers)
    assert all(len(b) == 4000 for b in buffers[:-1])
    assert all(fp.closed for fp in files) and spooled.closed


def test_a_body_is_read_from_its_start_whatever_its_position(tmp_path: Path):
    (fp,) = open_files(tmp_path, [5000])
    segment = file_segment(fp)
    fp.read(1234)
    assert b"".join(stream([segment], buffer_bytes=1 << 20)) == (tmp_path / "0.dcm").read_bytes()


def test_a_file_shorter_than_when_it_was_opened_raises(tmp_path: Path):
    """A truncated stored file must cut the connection short of its Content-Length (which
    the client detects), not end a well-formed body with the wrong bytes."""
    (fp,) = open_files(tmp_path, [10_000])
    segment = file_segment(fp)
    with open(tmp_path / "0.dcm", "r+b") as other:
        other.truncate(6000)
    with pytest.raises(OSError, match="4000 bytes early"):
        b"".join(stream([Segment(b"head"), segment], buffer_bytes=3000))
    assert fp.closed


def test_nothing_to_send_is_an_empty_stream():
    assert list(stream([])) == []
    assert list(stream([Segment(b"")])) == []
