"""DICOM JSON (PS3.18 Annex F) computed once at ingest.

Binary elements above a threshold become BulkDataURIs. URIs are written under a placeholder
root (`ROOT_TOKEN`) so the stored JSON can be served behind any host or proxy by one bytes
replace, and series metadata is a concatenation of stored rows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag

ROOT_TOKEN = "@@dicomweb-root@@"
ROOT_TOKEN_BYTES = ROOT_TOKEN.encode()

#: Binary VRs whose values go out as BulkDataURI when larger than the threshold (PS3.18 F.2.7).
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD = 1024
PIXEL_DATA_TAGS = frozenset({Tag("PixelData"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")})
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class BulkRange:
    """Where a bulk element's value sits in the stored file."""

    offset: int
    length: int
    vr: str


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def element_vr(elem: DataElement | RawDataElement, tag: BaseTag) -> str:
    vr = elem.VR
    if not vr or " or " in vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if " or " in vr:  # ambiguous (e.g. "OB or OW"): binary elements resolve to the wider one
        vr = "OW" if "OW" in vr else vr.split(" or ")[0]
    return vr


def value_offset(elem: DataElement | RawDataElement) -> int | None:
    """Absolute offset of the element's value in the file it was read from."""
    if isinstance(elem, RawDataElement):
        return elem.value_tell
    return getattr(elem, "file_tell", None)


def element_length(elem: DataElement | RawDataElement) -> int:
    if isinstance(elem, RawDataElement):
        return elem.length
    if getattr(elem, "is_undefined_length", False):
        return UNDEFINED_LENGTH
    value = elem.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


def is_bulk(tag: BaseTag, vr: str, length: int) -> bool:
    if tag in PIXEL_DATA_TAGS:
        return True
    return vr in BULK_VRS and (length == UNDEFINED_LENGTH or length > BULK_THRESHOLD)


#: SpecificCharacterSet values whose text decodes with one Python codec (no ISO 2022 code
#: extensions): the fast path handles these, pydicom everything else.
SIMPLE_CHARSETS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}
# How pydicom reads each VR (pydicom.values), mirrored for raw values: ASCII strings split on
# backslash after stripping trailing padding; text in the dataset's character set split per
# value; single-valued text; binary numbers.
PADDED_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
MULTI_TEXT_VRS = frozenset({"SH", "LO", "UC"})
SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
BINARY_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}


def fast_json_value(vr: str, raw: bytes, codec: str, little_endian: bool) -> Any:
    """The DICOM JSON values pydicom would produce for a raw value, or None to let pydicom
    convert it (anything unusual: empty numbers, bad text, other VRs)."""
    if vr in BINARY_NUMBER_FORMATS:
        code = BINARY_NUMBER_FORMATS[vr]
        size = struct.calcsize("<" + code)  # standard sizes: UL is 4 bytes, not native 8
        if len(raw) % size:
            return None
        order = "<" if little_endian else ">"
        return list(struct.unpack(f"{order}{len(raw) // size}{code}", raw))
    if vr in PADDED_STRING_VRS:
        return raw.decode("latin-1").rstrip(" \x00").split("\\")
    if vr in MULTI_TEXT_VRS:
        return [v.rstrip("\x00 ") for v in raw.decode(codec).split("\\")]
    if vr in SINGLE_TEXT_VRS:
        return [raw.decode(codec).rstrip("\x00 ")]
    if vr == "PN":
        return person_names(raw.decode(codec).rstrip("\x00 "))
    if vr == "IS":
        return [int(v) for v in raw.decode("latin-1").split("\\")]
    if vr == "DS":
        return [float(v) for v in raw.decode("latin-1").split("\\")]
    return None


def person_names(text: str) -> list[Any]:
    """PN values as pydicom's to_json_dict gives them (PS3.18 F.2.2): per value, its '='
    groups as Alphabetic, Ideographic, Phonetic; [""] when there is none (no "Value")."""
    if not text:
        return [""]
    names: list[Any] = []
    for value in text.split("\\"):
        groups = value.split("=")
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        names.append(name)
    return names


class DicomJsonEncoder:
    """Encodes one dataset; collects the file ranges of its bulk elements."""

    def __init__(self, instance_path: str, *, fast: bool = True) -> None:
        self.bulk_uri_prefix = f"{ROOT_TOKEN}{instance_path}/bulkdata/"
        self.bulk_ranges: dict[str, BulkRange] = {}
        self.problems: list[str] = []
        self.fast = fast

    def encode(self, ds: Dataset) -> dict[str, Any]:
        return self._encode(ds, "")

    def _fast_codec(self, ds: Dataset, inherited: str | None) -> str | None:
        """The codec of a dataset's text, when the fast path may read it."""
        if not self.fast or not getattr(ds, "original_encoding", (None, None))[1]:
            return None
        raw = ds.get_item(0x00080005)
        if raw is None:
            return inherited if inherited is not None else SIMPLE_CHARSETS[""]
        value = raw.value
        if isinstance(value, bytes):
            text = value.decode("latin-1").strip(" \x00")
        elif isinstance(value, str):  # pydicom converts it while reading the data set
            text = value.strip()
        else:  # several values: ISO 2022 code extensions
            return None
        return SIMPLE_CHARSETS.get(text)

    def add_pixel_data(self, tag: int, vr: str, offset: int, length: int) -> dict[str, Any]:
        """The top-level Pixel Data element, located by ingest without reading its value."""
        key = tag_key(tag)
        if length != UNDEFINED_LENGTH:
            self.bulk_ranges[key] = BulkRange(offset, length, vr)
        else:
            vr = "OB"  # PS3.5 A.4: encapsulated Pixel Data is OB
        return {key: {"vr": vr, "BulkDataURI": self.bulk_uri_prefix + key}}

    def _encode(
        self, ds: Dataset, path_prefix: str, inherited: str | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        codec = self._fast_codec(ds, inherited)
        # The elements as read (what get_item returns: raw until converted), without a
        # method call per element; pydicom's own Dataset.get_item costs more than the rest.
        elements = ds._dict
        for tag in sorted(elements, key=int):  # Tag's own __lt__ is Python: ints sort natively
            # PS3.18 F.2: group lengths are not encoded; file meta is not part of the dataset.
            if tag.element == 0 or tag.group == 0x0002:
                continue
            raw = elements[tag]
            if raw is None:
                continue
            vr = element_vr(raw, tag)
            key = tag_key(tag)
            path = path_prefix + key
            if vr != "SQ" and is_bulk(tag, vr, element_length(raw)):
                out[key] = {"vr": vr, "BulkDataURI": self.bulk_uri_prefix + path}
                offset = value_offset(raw)
                length = element_length(raw)
                if offset is not None and length != UNDEFINED_LENGTH:
                    self.bulk_ranges[path] = BulkRange(offset, length, vr)
                continue
            if codec is not None and isinstance(raw, RawDataElement) and raw.VR is not None:
                raw_value = raw.value
                if isinstance(raw_value, bytes):
                    try:
                        values = fast_json_value(vr, raw_value, codec, True)
                    except (UnicodeDecodeError, ValueError, struct.error):
                        values = None
                    if values is not None:
                        # pydicom: a value of nothing but padding is empty (VM 0): no "Value".
                        empty = not values or values == [""]
                        out[key] = {"vr": vr} if empty else {"vr": vr, "Value": values}
                        continue
            elem = ds[tag]
            if elem.VR == "SQ":
                items = [
                    self._encode(item, f"{path}/{number}/", codec)
                    for number, item in enumerate(elem.value, start=1)
                ]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            else:
                try:
                    out[key] = elem.to_json_dict(None, bulk_data_threshold=1 << 62)
                except (ValueError, TypeError) as exc:
                    # The file keeps the value; the JSON cannot carry it (e.g. IS "1A").
                    out[key] = {"vr": vr}
                    self.problems.append(f"{path}: value not representable in JSON ({exc})")
        return out


def subset(json_dataset: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in json_dataset.items() if k in keys}
