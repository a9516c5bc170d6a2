"""Direct encoders for the two small things pynetdicom encodes with pydicom on every C-STORE:
the command set of each DIMSE message (PS3.7 6.3: implicit VR little endian, group 0000) and
the File Meta of each received dataset (PS3.10 7.1: explicit VR little endian, group 0002).
pydicom's general writer spends most of pynetdicom's time per message on them (about 0.3 and
0.8 ms); these write the same bytes (tests compare) and hand anything unusual to pydicom.
Received messages start without the empty command set Dataset pynetdicom makes for each.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import dimse_messages

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


# --- C-STORE, both directions -------------------------------------------------------------
# pynetdicom turns every command set into a pydicom Dataset and back (an element per keyword,
# each validated): for the C-STORE-RQ it receives and the C-STORE-RSP it answers, that was a
# fifth of the service's CPU per instance. These read and write those two command sets
# directly; anything else (another command, an unexpected element) goes the pydicom way.

C_STORE_RQ_FIELD, C_STORE_RSP_FIELD, NO_DATA_SET = 0x0001, 0x8001, 0x0101
#: C-STORE-RQ command elements (PS3.7 Table 9.3-1): tag → (keyword, VR).
STORE_REQUEST_ELEMENTS = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000110: ("MessageID", "US"),
    0x00000700: ("Priority", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
    0x00001030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x00001031: ("MoveOriginatorMessageID", "US"),
}
STORE_REQUEST_REQUIRED = ("AffectedSOPClassUID", "CommandField", "MessageID", "Priority",
                          "CommandDataSetType", "AffectedSOPInstanceUID")


class StoreCommand:
    """A received C-STORE-RQ command set: the attributes pynetdicom reads of it."""

    def __init__(self, values: dict[str, Any]) -> None:
        for keyword, _ in STORE_REQUEST_ELEMENTS.values():
            setattr(self, keyword, values.get(keyword))


def store_request_values(data: bytes) -> dict[str, Any] | None:
    """The elements of an implicit VR little endian C-STORE-RQ command set, or None when it
    is another command or holds anything unexpected."""
    values: dict[str, Any] = {}
    position = 0
    while position < len(data):
        if position + 8 > len(data):
            return None
        group, element, length = struct.unpack_from("<HHI", data, position)
        position += 8
        value = data[position : position + length]
        position += length
        entry = STORE_REQUEST_ELEMENTS.get(group << 16 | element)
        if entry is None or len(value) != length:
            return None
        keyword, vr = entry
        if vr in NUMBER_FORMATS:
            if length != struct.calcsize(NUMBER_FORMATS[vr]):
                return None
            values[keyword] = struct.unpack(NUMBER_FORMATS[vr], value)[0]
        else:
            try:
                text = value.decode("ascii").rstrip("\0 ").lstrip(" " if vr == "AE" else "")
            except UnicodeDecodeError:
                return None
            values[keyword] = text or None
    if values.get("CommandField") != C_STORE_RQ_FIELD:
        return None
    if any(values.get(keyword) is None for keyword in STORE_REQUEST_REQUIRED):
        return None
    return values


def command_set_decoder(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """pynetdicom's `decode(bytestring, is_implicit_vr, is_little_endian)` as its DIMSE
    messages call it for command sets: a C-STORE-RQ becomes a `StoreCommand`."""

    def decode(bytestring: Any, is_implicit_vr: bool, is_little_endian: bool,
               deflated: bool = False) -> Any:
        if is_implicit_vr and is_little_endian and not deflated:
            values = store_request_values(bytestring.getvalue())
            if values is not None:
                return StoreCommand(values)
        return fallback(bytestring, is_implicit_vr, is_little_endian, deflated)

    return decode


def store_request_primitive(message: Any, primitive: Any) -> Any:
    """`C_STORE_RQ.message_to_primitive` for a `StoreCommand`: fills the C_STORE `primitive`
    (through its validating setters) as pynetdicom does from a Dataset."""
    command = message.command_set
    primitive.MessageID = command.MessageID
    primitive.AffectedSOPClassUID = command.AffectedSOPClassUID
    primitive.AffectedSOPInstanceUID = command.AffectedSOPInstanceUID
    primitive.Priority = command.Priority
    primitive.MoveOriginatorApplicationEntityTitle = command.MoveOriginatorApplicationEntityTitle
    primitive.MoveOriginatorMessageID = command.MoveOriginatorMessageID
    primitive.DataSet = message.data_set
    primitive._context_id = message.context_id
    primitive._dataset_path = message._data_set_path
    primitive._dataset_file = message._data_set_file
    return primitive


def store_response_command(primitive: Any) -> bytes | None:
    """The C-STORE-RSP command set (PS3.7 Table 9.3-2) of a C_STORE response primitive, as
    pynetdicom would encode it; None when a value is not a plain one."""
    offending = primitive.OffendingElement
    if offending:
        if len(offending) != 1:
            return None
        offending = int(offending[0])
    fields: list[tuple[int, str, Any]] = [
        (0x00000002, "UI", primitive.AffectedSOPClassUID),
        (0x00000100, "US", C_STORE_RSP_FIELD),
        (0x00000120, "US", primitive.MessageIDBeingRespondedTo),
        (0x00000800, "US", NO_DATA_SET),
        (0x00000900, "US", primitive.Status),
        (0x00000901, "AT", offending or None),
        (0x00000902, "LO", primitive.ErrorComment),
        (0x00001000, "UI", primitive.AffectedSOPInstanceUID),
    ]
    parts = []
    for tag, vr, value in fields:
        if value is None:
            continue
        part = command_element(tag, vr, str(value) if vr in TEXT_PADDING else value)
        if part is None:
            return None
        parts.append(part)
    body = b"".join(parts)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


class ReceivedMessage(dimse_messages.DIMSEMessage):
    """The message pynetdicom starts for each one received (`DIMSEServiceProvider.
    receive_primitive`), without the empty command set Dataset it makes (~20 µs, a sixth of
    the Datasets a C-STORE made): decoding the command set replaces it (with a `StoreCommand`
    for a C-STORE-RQ) and changes the message's class; anything that asks before gets an
    empty Dataset then, as from pynetdicom."""

    def __init__(self) -> None:  # DIMSEMessage.__init__'s attributes, but the Dataset
        self.context_id: int | None = None
        self.encoded_command_set = BytesIO()
        self.data_set: BytesIO | None = BytesIO()
        self._data_set_path = None
        self._data_set_file = None

    def __getattr__(self, name: str) -> Any:
        if name == "command_set":
            command_set = self.__dict__["command_set"] = Dataset()
            return command_set
        raise AttributeError(name)
