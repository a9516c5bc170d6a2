"""Reading an uploaded Part 10 file without letting it cost more than its size says.

Before pydicom parses anything: the file must carry 'DICM' at byte 128, or start with a data
element of the groups a dataset starts with (pydicom's older test files are such bare
datasets); a deflated dataset must inflate within its limits. While pydicom parses: top-level
tags must not repeat and may descend only a few times (PS3.5 7.1), so zeros or noise after a
plausible start end the parse at once instead of after millions of empty elements.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import pydicom.filereader
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.values import converters

from dicomweb.dicomjson import UNDEFINED_LENGTH
from dicomweb.errors import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, InstanceRejected
from dicomweb.structure import MAX_NESTED_ELEMENTS, check_structure, may_exceed

log = logging.getLogger(__name__)

# pydicom's reader decodes each element's VR with the name "iso8859", which Python looks up
# in its codec registry at every call (~0.3 us; some 90 calls an instance); "latin-1" is the
# same codec (encodings.aliases) on CPython's fast path. Values are decoded as before.
pydicom.filereader.default_encoding = "latin-1"

# Values of 1 KiB and more are read only when touched, so big pixel data stays on disk.
DEFER_SIZE = 1024
HEAD_BYTES = 4096
#: Files up to this size are read once and parsed from memory.
IN_MEMORY_BYTES = 256 * 1024
#: Groups a bare dataset (no preamble) may start with: File Meta, or the identifying group.
BARE_START_GROUPS = (0x0002, 0x0008)
#: Top-level tags that may come out of order before the file counts as noise (real files
#: sometimes misplace a private element or two; noise descends every other element).
MAX_TAG_DESCENTS = 16
#: Most top-level data elements: real instances have hundreds, a flood has millions.
MAX_TOP_LEVEL_ELEMENTS = 100_000
#: Sequence items parsed at most (pydicom takes ~50 us and ~1 KB each): a legitimate instance
#: has up to some 100k (RT structures, per-frame functional groups, tiles); floods of empty
#: items (8 bytes each) are refused from their density past SPARSE_ITEMS.
MAX_ITEMS = 1_000_000
SPARSE_ITEMS = 16_384
MIN_BYTES_PER_ITEM = 32
ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little and big endian
#: Inflation ratios are checked only past this size (a small sparse dataset may be 1000:1).
RATIO_FLOOR_BYTES = 16 << 20
PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
LONG_LENGTH_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
DEFLATED_UID_BYTES = DeflatedExplicitVRLittleEndian.encode()
BIG_ENDIAN_UID_BYTES = b"1.2.840.10008.1.2.2"


@dataclass(frozen=True)
class InflateLimits:
    """How far deflated data may inflate (Settings.max_inflated_bytes / max_inflate_ratio),
    and how much its sequences may hold."""

    max_bytes: int = 256 << 20
    max_ratio: int = 200
    #: Settings.max_nested_elements: items and elements in sequences (structure.py).
    max_nested: int = MAX_NESTED_ELEMENTS


@dataclass(frozen=True)
class PixelDataLocation:
    """Where the top-level Pixel Data element's value sits in the file."""

    tag: int
    vr: str
    value_offset: int
    length: int  # UNDEFINED_LENGTH for encapsulated data

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


class TopLevelGuard:
    """pydicom's `stop_when` for the top-level dataset: stops before Pixel Data and rejects
    what cannot be a dataset (repeated tags, noise, floods of elements)."""

    def __init__(self, stop_at_pixels: bool = True) -> None:
        self.stop_at_pixels = stop_at_pixels
        self.last = -1
        self.descents = 0
        self.count = 0

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        tag = int(tag)  # pydicom's Tag compares in Python: a plain int, natively
        self.count += 1
        if tag == self.last:
            if self.count == 2:  # pydicom asks twice about a first element whose VR surprised it
                self.count = 1
                return self.stop_at_pixels and tag in PIXEL_TAGS
            raise not_dicom(f"data element {format_tag(tag)} is repeated")
        if tag < self.last:
            self.descents += 1
            if self.descents > MAX_TAG_DESCENTS:
                raise not_dicom("its data elements are not in tag order (PS3.5 7.1)")
        if self.count > MAX_TOP_LEVEL_ELEMENTS:
            raise not_dicom(f"it has more than {MAX_TOP_LEVEL_ELEMENTS} top-level data elements")
        self.last = tag
        return self.stop_at_pixels and tag in PIXEL_TAGS


def format_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def not_dicom(why: str) -> InstanceRejected:
    return InstanceRejected(CANNOT_UNDERSTAND, f"not a DICOM file: {why}")


# --- before parsing -----------------------------------------------------------------------


def ensure_part10(path: Path) -> bytes:
    """The file's first HEAD_BYTES, after giving a bare dataset the Part 10 header it lacks
    (its own bytes are kept unchanged after it). Non-DICOM is rejected from its first bytes."""
    with path.open("rb") as fp:
        head = fp.read(HEAD_BYTES)
    if head[128:132] == b"DICM":
        return head
    check_bare_start(head, path.stat().st_size)
    guard = TopLevelGuard()

    def past_sop_uids(tag: int, vr: str | None, length: int) -> bool:
        # Only the SOP UIDs and the encoding are needed here; a sequence (read whole by
        # pydicom) waits for the structure walk that bounds it.
        return guard(tag, vr, length) or tag > 0x00080018 or length == UNDEFINED_LENGTH

    try:
        with path.open("rb") as fp:
            ds = read_partial(fp, past_sop_uids, defer_size=DEFER_SIZE, force=True)
    except InstanceRejected:
        raise
    except Exception as exc:  # pydicom raises many types on damaged input
        raise parse_failure(exc) from exc
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise not_dicom("no 'DICM' marker, no File Meta Information and no SOP UIDs")
    implicit, little = ds.original_encoding
    syntax = "1.2.840.10008.1.2" if implicit else (
        "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    header = part10_header(str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax)
    prepend(path, header)
    with path.open("rb") as fp:
        return fp.read(HEAD_BYTES)


def check_bare_start(head: bytes, file_size: int) -> None:
    """A file without 'DICM' must start with a File Meta or group 0008 element, explicit VR
    (either byte order) or implicit VR with a length the file can hold."""
    if len(head) < 8:
        raise not_dicom("it is shorter than one data element")
    for order in "<>":
        group, _ = struct.unpack(order + "HH", head[:4])
        if group not in BARE_START_GROUPS:
            continue
        vr = head[4:6].decode("latin-1")
        if vr in converters:
            return
        (length,) = struct.unpack(order + "I", head[4:8])
        if order == "<" and length <= file_size - 8:
            return
    raise not_dicom("no 'DICM' marker at byte 128, and it does not start with a data element")


def prepend(path: Path, header: bytes) -> None:
    """Insert `header` before the file's bytes in place (same inode: its lock is kept),
    moving the body back to front in 1 MiB steps."""
    fd = os.open(path, os.O_RDWR)
    try:
        end = os.fstat(fd).st_size
        step = 1 << 20
        while end > 0:
            start = max(0, end - step)
            os.pwrite(fd, os.pread(fd, end - start, start), start + len(header))
            end = start
        os.pwrite(fd, header, 0)
    finally:
        os.close(fd)


#: PS3.10 7.1: who wrote the File Meta of the files this server makes.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1452.1"
IMPLEMENTATION_VERSION_NAME = "DICOMWEB_PY_01"


def part10_header(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def dataset_start(head: bytes) -> int | None:
    """Offset of the dataset after the File Meta group, from its group length (0002,0000)."""
    if head[132:140] != b"\x02\x00\x00\x00UL\x04\x00" or len(head) < 144:
        return None
    return 144 + struct.unpack("<I", head[140:144])[0]


def check_dataset_start(head: bytes) -> None:
    """A stored dataset holds no command elements (group 0000, PS3.7 E.1): pydicom would read
    any number of them (e.g. zeros) before its stop condition is ever asked."""
    start = dataset_start(head)
    if start is not None and start + 2 <= len(head) and head[start:start + 2] == b"\x00\x00":
        raise not_dicom("its data set starts with command elements (group 0000) or zeros")


def is_deflated(head: bytes) -> bool:
    start = dataset_start(head) or len(head)
    return DEFLATED_UID_BYTES in head[132:start]


def check_inflation(path: Path, head: bytes, limits: InflateLimits) -> tuple[int, int]:
    """Inflate the deflated dataset once, keeping nothing, to learn its size before pydicom
    inflates it in memory (PS3.5 A.5). Returns how many sequence items it holds, and its
    inflated size."""
    start = dataset_start(head)
    if start is None:
        raise not_dicom("a deflated dataset needs File Meta Information with its group length")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    compressed = path.stat().st_size - start
    inflated = items = 0
    with path.open("rb") as fp:
        fp.seek(start)
        while chunk := fp.read(1 << 20):
            data = chunk
            while data and not inflater.eof:  # bytes after the end (padding) are not inflated
                try:
                    out = inflater.decompress(data, 1 << 20)
                except zlib.error:
                    raise not_dicom("its deflated data set is damaged") from None
                inflated += len(out)
                items += out.count(ITEM_TAGS[0])  # (a tag split between outputs is missed)
                check_inflated(inflated, compressed, limits)
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    return items, inflated


def check_inflated(inflated: int, compressed: int, limits: InflateLimits) -> None:
    if inflated > limits.max_bytes:
        raise InstanceRejected(
            OUT_OF_RESOURCES,
            f"the deflated data set inflates past {limits.max_bytes} bytes "
            "(DICOMWEB_MAX_INFLATED_BYTES)")
    if inflated > RATIO_FLOOR_BYTES and inflated > limits.max_ratio * max(compressed, 1):
        raise InstanceRejected(
            OUT_OF_RESOURCES,
            f"the deflated data set inflates more than {limits.max_ratio} times "
            "(DICOMWEB_MAX_INFLATE_RATIO)")


@dataclass(frozen=True)
class FileScan:
    """One pass over the file before pydicom parses it: its digest and its sequence items."""

    sha256: str
    size: int
    items: int


def item_tags(head: bytes) -> tuple[bytes, ...]:
    """The item tag encodings pydicom may meet in this file: little endian only once the File
    Meta (all of it in `head`) names another transfer syntax than explicit VR big endian,
    whose items pydicom would not read; both when that is not known. Half the search for
    every file."""
    start = dataset_start(head)
    if start is not None and start <= len(head) and BIG_ENDIAN_UID_BYTES not in head[132:start]:
        return ITEM_TAGS[:1]
    return ITEM_TAGS


def scan_file(fp: BinaryIO, tags: tuple[bytes, ...] = ITEM_TAGS) -> FileScan:
    """From the start of the open file to its end."""
    fp.seek(0)
    return scan_chunks(iter(lambda: fp.read(1 << 20), b""), tags)


def scan_chunks(chunks: Iterable[bytes], tags: tuple[bytes, ...] = ITEM_TAGS) -> FileScan:
    digest = hashlib.sha256()
    size = items = 0
    tail = b""
    for chunk in chunks:
        digest.update(chunk)
        joint = tail + chunk[:3]  # an item tag split between two reads
        items += sum(chunk.count(tag) + joint.count(tag) for tag in tags)
        tail = chunk[-3:]
        size += len(chunk)
    return FileScan(digest.hexdigest(), size, items)


def check_items(items: int, size: int) -> None:
    if items > MAX_ITEMS:
        raise InstanceRejected(
            OUT_OF_RESOURCES, f"it holds {items} sequence items; the server parses at most "
            f"{MAX_ITEMS}")
    if items > SPARSE_ITEMS and items * MIN_BYTES_PER_ITEM > size:
        raise not_dicom(f"{items} sequence items in {size} bytes is a flood of empty items")


# --- parsing ------------------------------------------------------------------------------


def read_dataset(
    path: Path, limits: InflateLimits
) -> tuple[Dataset, PixelDataLocation | None, FileScan]:
    """Read a Part 10 file up to its Pixel Data, whose value stays on disk (pydicom would
    load it whole); values above DEFER_SIZE are read only when touched."""
    with path.open("rb") as fp:  # one open for the checks, the scan and the parse
        head = fp.read(HEAD_BYTES)
        if head[128:132] != b"DICM":
            head = ensure_part10(path)  # gives it a header in place: fp reads the new bytes
        check_dataset_start(head)
        source: BinaryIO = fp
        if os.fstat(fp.fileno()).st_size <= IN_MEMORY_BYTES:
            # One read; pydicom then parses from memory (a tell() per element was an lseek).
            fp.seek(0)
            data = fp.read()
            source = BytesIO(data)
            scan = scan_chunks([data] if data else [], item_tags(head))
        else:
            scan = scan_file(fp, item_tags(head))
        check_items(scan.items, scan.size)
        deflated = is_deflated(head)
        if deflated:
            check_items(*check_inflation(path, head, limits))
        if deflated or may_exceed(scan.items, scan.size, limits.max_nested):
            check_structure(path, limits.max_nested)
        try:
            source.seek(0)
            # Offsets in a deflated stream are not file offsets: it is read whole.
            ds = read_partial(source, TopLevelGuard(stop_at_pixels=not deflated),
                              defer_size=DEFER_SIZE)
            stopped_at = source.tell()  # before anything reads a deferred value from it
            syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
            if syntax == DeflatedExplicitVRLittleEndian or deflated:
                return ds, None, scan
            check_complete(ds, scan.size)
            return ds, pixel_data_location(source, stopped_at, syntax), scan
        except InstanceRejected:
            raise
        except InvalidDicomError as exc:
            raise parse_failure(exc) from exc
        except Exception as exc:  # pydicom raises many types on damaged input
            raise parse_failure(exc) from exc


def check_complete(ds: Dataset, file_size: int) -> None:
    """pydicom reads a file cut inside a value without complaint (it warns at most): every
    top-level value must end within the file."""
    # The elements as read (raw, unconverted): what get_item(tag) returns, one lookup less.
    for tag, element in ds._dict.items():
        value_tell = getattr(element, "value_tell", None)
        length = getattr(element, "length", UNDEFINED_LENGTH)
        if value_tell is not None and length != UNDEFINED_LENGTH and (
            value_tell + length > file_size
        ):
            raise InstanceRejected(
                CANNOT_UNDERSTAND,
                f"truncated file: data element {format_tag(tag)} needs {value_tell + length} "
                f"bytes, the file has {file_size}")


UNKNOWN_VR = re.compile(r"Unknown Value Representation '([^']{0,8})' in tag (\([0-9A-Fa-f,]+\))")


def parse_failure(exc: BaseException) -> InstanceRejected:
    """What is wrong with the input, in words; pydicom's own text goes to the log."""
    log.info("DICOM parse failure: %r", exc)
    if isinstance(exc, (EOFError, struct.error)):
        why = "the data ends inside a data element (truncated or damaged)"
    elif isinstance(exc, NotImplementedError) and (match := UNKNOWN_VR.search(str(exc))):
        why = f"unknown Value Representation {match[1]!r} in tag {match[2]}"
    elif isinstance(exc, InvalidDicomError):
        why = "no 'DICM' marker at byte 128"
    elif isinstance(exc, MemoryError):
        return InstanceRejected(OUT_OF_RESOURCES, "the server has no memory for this data set")
    else:
        why = "its data elements cannot be read (damaged or not DICOM)"
    return InstanceRejected(CANNOT_UNDERSTAND, f"cannot parse the DICOM data set: {why}")


def pixel_data_location(fp: BinaryIO, position: int, syntax: UID) -> PixelDataLocation | None:
    """Parse the element header where pydicom stopped (PS3.5 7.1)."""
    fp.seek(position)
    header = fp.read(12)
    if len(header) < 8:
        return None
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"
    group, element = struct.unpack(order + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        return None
    implicit = syntax == "1.2.840.10008.1.2"
    vr = PIXEL_TAGS[tag]
    if implicit:
        (length,) = struct.unpack(order + "I", header[4:8])
        return PixelDataLocation(tag, vr, position + 8, length)
    vr = header[4:6].decode("ascii", "replace")
    if vr in LONG_LENGTH_VRS:
        (length,) = struct.unpack(order + "I", header[8:12])
        return PixelDataLocation(tag, vr, position + 12, length)
    (length,) = struct.unpack(order + "H", header[6:8])
    return PixelDataLocation(tag, vr, position + 8, length)
