"""An uploaded data set's nesting, counted before pydicom parses it.

pydicom makes every sequence item and every element in it a Python object (about 1 KB each,
and as much again as DICOM JSON), recursively: a 36 MB upload of 900,000 one-element items
took 1.8 GB and two minutes to ingest, and a few hundred nested sequences ended in a
RecursionError. This walks the element headers only, iteratively, skipping every value,
and stops at the first limit passed: the cost is bounded before anything is built.

The walk follows pydicom's reading rules (PS3.5 7.1, 7.5): SQ, undefined-length UN and
implicit VR values are sequences; a UN or implicit VR value that starts with an item tag is
walked as one too (pydicom may read it so when the tag is a known sequence). Where the bytes
do not make sense the walk gives up on that value (or stops, when no defined length encloses
it) and leaves the verdict to pydicom: it never rejects what pydicom would read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.values import converters

from dicomweb.errors import OUT_OF_RESOURCES, InstanceRejected

#: Sequences inside sequences: structured reports nest a dozen levels; DICOM JSON takes four
#: JSON levels per sequence and orjson writes at most 255 (pydicom recursed out past ~400).
MAX_SEQUENCE_DEPTH = 32
#: Default of DICOMWEB_MAX_NESTED_ELEMENTS, items and data elements inside sequences (the top
#: level is bounded by part10): an enhanced multi-frame image of 3,000 frames has some
#: 100,000; 250,000 took 5.4 s of CPU and 230 MiB to ingest (walking them to refuse one
#: more: 0.5 s).
MAX_NESTED_ELEMENTS = 250_000

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                             b"UR", b"UT", b"UV"})
KNOWN_VRS = frozenset(vr.encode() for vr in converters if len(vr) == 2)
IMPLICIT_LE, BIG_ENDIAN = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
ITEM_LE, ITEM_BE = struct.pack("<HH", 0xFFFE, 0xE000), struct.pack(">HH", 0xFFFE, 0xE000)
SEQUENCE_END_LE = struct.pack("<HH", 0xFFFE, 0xE0DD)
SEQUENCE_END_BE = struct.pack(">HH", 0xFFFE, 0xE0DD)


class Unreadable(Exception):
    """The bytes are not what the walk expects here; pydicom decides."""


class Source:
    """Bytes read in order: `read(n)`, `peek(n)` and `skip(n)`, counting the position."""

    def __init__(self, read: Callable[[int], bytes], skip: Callable[[int], None],
                 seek: Callable[[int], None] | None = None) -> None:
        self._read, self._skip, self._seek = read, skip, seek
        self._ahead = b""
        self.position = 0

    def rewind(self, position: int) -> None:
        """Back to an earlier position (files only: a deflated stream cannot go back)."""
        if self._seek is None:
            raise Unreadable
        self._seek(position)
        self._ahead, self.position = b"", position

    def skip_past(self, marker: bytes) -> None:
        """Forward to the first byte after `marker`, as pydicom searches for a delimiter."""
        carry = b""
        while True:
            chunk = self._ahead or self._read(1 << 16)
            self._ahead = b""
            if not chunk:
                raise EOFError
            window = carry + chunk
            found = window.find(marker)
            if found >= 0:
                self.position += found + len(marker) - len(carry)
                self._ahead = window[found + len(marker):]
                return
            self.position += len(chunk)
            carry = window[-(len(marker) - 1):]

    def peek(self, size: int) -> bytes:
        if len(self._ahead) < size:
            self._ahead += self._read(size - len(self._ahead))
        return self._ahead[:size]

    def read(self, size: int) -> bytes:
        data, self._ahead = self._ahead[:size], self._ahead[size:]
        if len(data) < size:
            data += self._read(size - len(data))
        self.position += len(data)
        if len(data) < size:
            raise EOFError
        return data

    def skip(self, size: int) -> None:
        ahead = min(size, len(self._ahead))
        self._ahead = self._ahead[ahead:]
        if size > ahead:
            self._skip(size - ahead)
        self.position += size


def file_source(fp: BinaryIO) -> Source:
    return Source(fp.read, lambda n: fp.seek(n, 1), fp.seek)


def inflated_source(fp: BinaryIO) -> Source:
    """The inflated bytes of a deflated data set (PS3.5 A.5), produced as they are read."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = bytearray()

    def read(size: int) -> bytes:
        while len(pending) < size and not inflater.eof:
            chunk = inflater.unconsumed_tail or fp.read(1 << 16)
            if not chunk:
                break
            try:
                pending.extend(inflater.decompress(chunk, 1 << 20))
            except zlib.error:
                break
        out = bytes(pending[:size])
        del pending[:size]
        return out

    def skip(size: int) -> None:
        while size > 0:
            step = read(min(size, 1 << 20))
            if not step:
                raise EOFError
            size -= len(step)

    return Source(read, skip)


@dataclass
class Frame:
    """A sequence, an item, or encapsulated fragments being walked."""

    kind: str  # "sequence" | "item" | "fragments"
    end: int | None  # absolute end of a defined length, None when delimited
    explicit: bool
    little: bool
    start: int = 0  # of the value (fragments: where pydicom searches for the delimiter)


@dataclass
class Structure:
    nested_elements: int = 0
    depth: int = 0  # of the sequence being walked
    deepest: int = 0


def too_much(why: str) -> InstanceRejected:
    return InstanceRejected(OUT_OF_RESOURCES, f"the data set {why}")


class Walk:
    def __init__(self, source: Source, explicit: bool, little: bool,
                 max_nested: int = MAX_NESTED_ELEMENTS) -> None:
        self.source = source
        self.max_nested = max_nested
        self.stack: list[Frame] = []
        self.explicit, self.little = explicit, little
        self.started = False
        self.found = Structure()

    def run(self) -> Structure:
        while True:
            self._close_finished()
            try:
                self._step()
            except EOFError:
                return self.found
            except Unreadable:
                if not self._give_up_on_value():
                    return self.found

    def _close_finished(self) -> None:
        while self.stack and self.stack[-1].end is not None and (
            self.source.position >= self.stack[-1].end
        ):
            self._pop()

    def _pop(self) -> None:
        frame = self.stack.pop()
        if frame.kind == "sequence":
            self.found.depth -= 1

    def _give_up_on_value(self) -> bool:
        """Skip to the end of the innermost value of known length, if there is one."""
        while self.stack:
            frame = self.stack[-1]
            if frame.end is not None and frame.end >= self.source.position:
                try:
                    self.source.skip(frame.end - self.source.position)
                except EOFError:
                    return False
                self._pop()
                return True
            self._pop()
        return False

    def _encoding(self) -> tuple[bool, bool]:
        if not self.stack:
            return self.explicit, self.little
        return self.stack[-1].explicit, self.stack[-1].little

    def _looks_explicit(self) -> bool:
        """pydicom's test at the start of every data set: a VR of two capitals."""
        head = self.source.peek(6)
        return len(head) == 6 and 0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B

    def _step(self) -> None:
        if not self.started:  # the top-level data set: pydicom believes its first element
            self.started = True
            self.explicit = self._looks_explicit()
        explicit, little = self._encoding()
        order = "<" if little else ">"
        header = self.source.read(8)
        group, element, length = struct.unpack(order + "HHI", header)
        tag = group << 16 | element
        top = self.stack[-1] if self.stack else None
        if top is not None and top.kind != "item":
            self._in_sequence(top, tag, length)
            return
        if tag == ITEM_END:
            if top is None or top.end is not None:
                raise Unreadable
            self._pop()
            return
        if top is not None:
            self._count()
        vr: bytes | None = None  # implicit VR
        if explicit:
            vr = header[4:6]
            if vr in LONG_LENGTH_VRS:
                (length,) = struct.unpack(order + "I", self.source.read(4))
            elif vr in KNOWN_VRS or (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B):
                (length,) = struct.unpack(order + "H", header[6:8])
            else:
                vr = None  # not a VR: pydicom reads the element as implicit VR
        self._value(tag, vr, length, explicit, little)

    def _value(self, tag: int, vr: bytes | None, length: int, explicit: bool,
               little: bool) -> None:
        position = self.source.position
        if length == UNDEFINED:
            if vr in (b"SQ", b"UN") or (vr is None and self._implicit_sequence(tag, little)):
                self._open_sequence(None, explicit, little)
            else:  # encapsulated fragments, else bytes up to a sequence delimiter
                self.stack.append(Frame("fragments", None, explicit, little, position))
        elif vr == b"SQ" or (vr in (None, b"UN") and length >= 8 and self._at_item(little)):
            self._open_sequence(position + length, explicit, little)
        elif length:
            self.source.skip(length)

    def _implicit_sequence(self, tag: int, little: bool) -> bool:
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:  # a private tag: a sequence if items follow
            return self._at_item(little)

    def _at_item(self, little: bool) -> bool:
        return self.source.peek(4) == (ITEM_LE if little else ITEM_BE)

    def _open_sequence(self, end: int | None, explicit: bool, little: bool) -> None:
        self.found.depth += 1
        self.found.deepest = max(self.found.deepest, self.found.depth)
        if self.found.depth > MAX_SEQUENCE_DEPTH:
            raise too_much(f"nests sequences more than {MAX_SEQUENCE_DEPTH} deep")
        self.stack.append(Frame("sequence", end, explicit, little))

    def _in_sequence(self, top: Frame, tag: int, length: int) -> None:
        if tag == SEQUENCE_END and top.end is None:
            self._pop()
        elif top.kind == "fragments":
            if tag == ITEM and length != UNDEFINED:
                self.source.skip(length)
            else:  # not fragments: pydicom searches the value for the delimiter
                self.stack.pop()
                self.source.rewind(top.start)
                self.source.skip_past(SEQUENCE_END_LE if top.little else SEQUENCE_END_BE)
                self.source.skip(4)
        else:  # pydicom reads whatever stands here as an item
            self._count()
            end = None if length == UNDEFINED else self.source.position + length
            explicit = top.explicit and self._looks_explicit()
            self.stack.append(Frame("item", end, explicit, top.little))

    def _count(self) -> None:
        self.found.nested_elements += 1
        if self.found.nested_elements > self.max_nested:
            raise too_much(f"holds more than {self.max_nested} data elements and items in "
                           "sequences; the server parses at most that many "
                           "(DICOMWEB_MAX_NESTED_ELEMENTS)")


def file_meta_syntax(fp: BinaryIO) -> str | None:
    """Transfer Syntax UID of a Part 10 file, walking its File Meta group; the file is left
    at the data set's first byte."""
    fp.seek(132)
    syntax = None
    while True:
        start = fp.tell()
        header = fp.read(8)
        if len(header) < 8 or struct.unpack("<H", header[:2])[0] != 0x0002:
            fp.seek(start)
            return syntax
        vr = header[4:6]
        if vr in LONG_LENGTH_VRS:
            (length,) = struct.unpack("<I", fp.read(4))
        else:
            (length,) = struct.unpack("<H", header[6:8])
        if length == UNDEFINED:
            fp.seek(start)
            return None
        value = fp.read(length)
        if header[2:4] == b"\x10\x00":
            syntax = value.rstrip(b"\0 ").decode("ascii", "replace")


def may_exceed(items: int, size: int, max_nested: int = MAX_NESTED_ELEMENTS) -> bool:
    """Whether a file of `size` bytes with `items` item tags (counted while it was hashed)
    can pass a limit: nesting needs an item per level, and every element takes 8 bytes or
    more. Most files need no walk."""
    return items >= MAX_SEQUENCE_DEPTH or (items > 0 and items + size // 8 > max_nested)


def check_structure(path: Path, max_nested: int = MAX_NESTED_ELEMENTS) -> Structure:
    """Raise InstanceRejected (0xA700) when the data set nests deeper or holds more in its
    sequences than the server parses; `path` is a Part 10 file."""
    with path.open("rb") as fp:
        syntax = file_meta_syntax(fp)
        start = fp.tell()
        if syntax is None:  # pydicom guesses the encoding from the first element
            explicit = fp.read(6)[4:6] in KNOWN_VRS
            fp.seek(start)
            syntax = "1.2.840.10008.1.2.1" if explicit else IMPLICIT_LE
        if syntax == DEFLATED:
            source = inflated_source(fp)
        else:
            source = file_source(fp)
            source.position = start
        return Walk(source, syntax != IMPLICIT_LE, syntax != BIG_ENDIAN, max_nested).run()
