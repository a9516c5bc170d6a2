"""What a WADO-RS answer sends, made certain before its status line.

A 200 must never be cut off (PS3.18 gives no way to say "the rest failed" once the body has
started), so everything that can fail happens first:

* stored files are opened before the status line: a DELETE racing the retrieve unlinks them,
  but an open file stays readable, and a file already gone is a 404;
* transcoded instances are produced whole (into unlinked temporary files) before the status
  line, so an instance that cannot be transcoded is a 406, not a cut body;
* frames and bulk data are streamed from the open file a frame or a chunk at a time, so a
  long frame list or a 1 GiB element costs one frame or one chunk of memory.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.tag import Tag

from dicomweb.errors import NotFound
from dicomweb.negotiation import DEFLATED, EXPLICIT_VR_BIG_ENDIAN
from dicomweb.pixels.description import PixelDescription
from dicomweb.store.repository import InstanceLocation, Store

CHUNK_BYTES = 1 << 20
#: Transcoded instances up to this size stay in memory; larger ones go to a temporary file.
SPOOL_BYTES = 8 << 20
#: Values larger than this are not read when a file is parsed to find a bulk element.
DEFER_BYTES = 1024


def raise_open_file_limit() -> None:
    """Every file of a retrieve is open at once: allow the process as many as the system
    lets it (the soft limit up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def open_blob(store: Store, loc: InstanceLocation) -> BinaryIO:
    """The stored file, open; 404 when it is gone (deleted since it was located)."""
    try:
        return open(store.blobs.file_name(loc.blob_key), "rb", buffering=0)
    except FileNotFoundError:
        raise NotFound(f"instance {loc.sop_instance_uid} has just been deleted") from None


def file_chunks(fp: BinaryIO, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The whole open file from its start, then closed."""
    try:
        fp.seek(0)
        while chunk := fp.read(chunk_size):
            yield chunk
    finally:
        fp.close()


def read_ranges(fp: BinaryIO, ranges: Iterable[list[int]]) -> bytes:
    fd = fp.fileno()
    return b"".join(os.pread(fd, length, offset) for offset, length in ranges)


def range_chunks(fp: BinaryIO, offset: int, length: int, swap_width: int = 0,
                 chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``length`` bytes from ``offset`` in chunks, big-endian words swapped when asked."""
    step = chunk_size - chunk_size % max(swap_width, 1)
    end = offset + length
    fd = fp.fileno()
    try:
        while offset < end:
            chunk = os.pread(fd, min(step, end - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            yield swap_words(chunk, swap_width) if swap_width > 1 else chunk
    finally:
        fp.close()


def swap_words(data: bytes, width: int) -> bytes:
    usable = len(data) - len(data) % width
    words = np.frombuffer(data, dtype=f">u{width}", count=usable // width)
    return words.astype(f"<u{width}").tobytes() + data[usable:]


def big_endian_frame(fp: BinaryIO, ranges: list[list[int]], first_offset: int,
                     desc: PixelDescription) -> bytes:
    """A native big-endian frame as little endian. Byte order follows Bits Allocated
    (PS3.5 8.1.1, 8.2): 16/32/64-bit samples swap whole; 8- and 1-bit samples are bytes,
    except in an OW value, whose 16-bit words swap (PS3.5 7.3) from the value's start, which
    an odd-sized frame does not share: it is read from the word boundary before it."""
    if desc.bits_allocated > 8:
        return swap_words(read_ranges(fp, ranges), desc.bits_allocated // 8)
    data = read_ranges(fp, ranges)
    if desc.pixel_data_vr != "OW":
        return data
    offset, length = ranges[0][0], sum(n for _, n in ranges)
    lead = (offset - first_offset) % 2
    aligned = os.pread(fp.fileno(), length + lead + 1, offset - lead)
    aligned = aligned[: len(aligned) - len(aligned) % 2]
    return swap_words(aligned, 2)[lead : lead + length]


def stream_frames(fp: BinaryIO, loc: InstanceLocation, numbers: list[int],
                  desc: PixelDescription | None) -> Iterator[bytes]:
    """Frames as stored (little-endian native, or the codestream), one at a time, from the
    open file; big-endian native frames are swapped when ``desc`` is given."""
    ranges = loc.frames or []
    try:
        for number in numbers:
            frame_ranges = ranges[number - 1]
            if desc is not None and loc.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
                yield big_endian_frame(fp, frame_ranges, ranges[0][0][0], desc)
            else:
                yield read_ranges(fp, frame_ranges)
    finally:
        fp.close()


def spool(data: bytes) -> BinaryIO:
    """Transcoded bytes kept until they are sent: in memory when small, else in an unlinked
    temporary file (nothing is left behind, whatever happens to the process)."""
    if len(data) <= SPOOL_BYTES:
        return io.BytesIO(data)
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    spooled.write(data)
    spooled.seek(0)
    return spooled


def locate_element(path: os.PathLike[str] | str, bulk_path: str
                   ) -> tuple[int, int, bool, str] | None:
    """(offset, length, big endian, VR) of the element a bulk data path names (tags and
    item numbers), by parsing the file without reading large values; None when absent or
    of undefined length."""
    parts = bulk_path.split("/")
    try:
        current = dcmread(path, defer_size=DEFER_BYTES)
        if current.file_meta.get("TransferSyntaxUID") == DEFLATED:
            return None  # offsets in an inflated stream are not offsets in the file
        while len(parts) > 1:
            current = current[Tag(int(parts[0], 16))].value[int(parts[1]) - 1]
            parts = parts[2:]
        raw = current.get_item(Tag(int(parts[0], 16)))
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    if raw is None:
        return None
    length = getattr(raw, "length", None)
    tell = getattr(raw, "value_tell", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return None
    return int(tell), int(length), not raw.is_little_endian, str(raw.VR)
