"""Direct encoders for the two small things pynetdicom encodes with pydicom on every C-STORE:
the command set of each DIMSE message (PS3.7 6.3: implicit VR little endian, group 0000) and
the File Meta of each received dataset (PS3.10 7.1: explicit VR little endian, group 0002).
pydicom's general writer spends most of pynetdicom's time per message on them (about 0.3 and
0.8 ms); these write the same bytes (tests compare) and hand anything unusual to pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

#: Command set VRs (PS3.7 Annex E) written here; any other goes through pydicom.
NUMBER_FORMATS = {"US": "<H", "UL": "<I"}
TEXT_PADDING = {"UI": b"\0", "AE": b" ", "LO": b" ", "SH": b" ", "CS": b" "}


def text_value(value: Any, padding: bytes) -> bytes:
    data = str(value).encode("ascii")
    return data + padding if len(data) % 2 else data


def command_element(tag: int, vr: str, value: Any) -> bytes | None:
    """One implicit VR little endian element, or None when not a simple command value."""
    if value is None or value == "":
        data = b""
    elif vr in NUMBER_FORMATS and isinstance(value, int):
        data = struct.pack(NUMBER_FORMATS[vr], value)
    elif vr in TEXT_PADDING and isinstance(value, str):
        try:
            data = text_value(value, TEXT_PADDING[vr])
        except UnicodeEncodeError:
            return None
    elif vr == "AT" and isinstance(value, int):
        data = struct.pack("<HH", value >> 16, value & 0xFFFF)
    else:
        return None
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(data)) + data


def command_set_encoder(fallback: Callable[..., bytes | None]) -> Callable[..., bytes | None]:
    """pynetdicom's `encode(ds, is_implicit_vr, is_little_endian, deflated=False)`, direct for
    command sets."""

    def encode(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool,
               deflated: bool = False) -> bytes | None:
        if not (is_implicit_vr and is_little_endian and not deflated):
            return fallback(ds, is_implicit_vr, is_little_endian, deflated)
        parts = []
        for tag in sorted(ds.keys()):
            if tag >> 16 != 0:
                return fallback(ds, is_implicit_vr, is_little_endian, deflated)
            elem = ds[tag]
            part = command_element(int(tag), elem.VR, elem.value)
            if part is None:
                return fallback(ds, is_implicit_vr, is_little_endian, deflated)
            parts.append(part)
        return b"".join(parts)

    return encode


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
              implementation_uid: str, implementation_version: str) -> bytes:
    """The File Meta group after the preamble and prefix, explicit VR little endian."""
    body = b"".join([
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\0\1",
        explicit_text(0x0002, "UI", sop_class_uid, b"\0"),
        explicit_text(0x0003, "UI", sop_instance_uid, b"\0"),
        explicit_text(0x0010, "UI", transfer_syntax, b"\0"),
        explicit_text(0x0012, "UI", implementation_uid, b"\0"),
        explicit_text(0x0013, "SH", implementation_version, b" "),
    ])
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def explicit_text(element: int, vr: str, value: str, padding: bytes) -> bytes:
    data = text_value(value, padding)
    return struct.pack("<HH2sH", 0x0002, element, vr.encode(), len(data)) + data


def write_file_meta(fp: BinaryIO, meta: bytes) -> None:
    """Stands in for pydicom's `write_file_meta_info(fp, meta)`: `meta` is `file_meta(...)`."""
    fp.write(meta)
