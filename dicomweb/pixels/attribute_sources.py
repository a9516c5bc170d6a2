"""Attribute sources: one read interface over DICOM JSON (PS3.18 Annex F) and pydicom
datasets, and value coercion that never raises on malformed optional values (what
:mod:`.description` builds a pixel description from)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pydicom.datadict import tag_for_keyword


class AttributeSource(Protocol):
    def values(self, keyword: str) -> list[Any]: ...

    def items(self, keyword: str) -> list[AttributeSource]: ...

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]: ...

    def vr(self, keyword: str) -> str | None: ...


def json_key(keyword: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a pydicom keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


class JsonSource:
    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d if isinstance(d, dict) else {}

    def _element(self, keyword: str) -> dict[str, Any]:
        elem = self._d.get(json_key(keyword))
        return elem if isinstance(elem, dict) else {}

    def vr(self, keyword: str) -> str | None:
        vr = self._element(keyword).get("vr")
        return vr if isinstance(vr, str) else None

    def values(self, keyword: str) -> list[Any]:
        value = self._element(keyword).get("Value")
        return list(value) if isinstance(value, list) else []

    def items(self, keyword: str) -> list[AttributeSource]:
        return [JsonSource(item) for item in self.values(keyword) if isinstance(item, dict)]

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]:
        elem = self._element(keyword)
        inline = elem.get("InlineBinary")
        if isinstance(inline, str):
            try:
                return base64.b64decode(inline), None
            except ValueError:
                return None, None
        uri = elem.get("BulkDataURI")
        return None, uri if isinstance(uri, str) else None


class DatasetSource:
    def __init__(self, ds: Any) -> None:
        self._ds = ds

    def _value(self, keyword: str) -> Any:
        try:
            return getattr(self._ds, keyword, None)
        except Exception:  # malformed raw element: treat as absent
            return None

    def vr(self, keyword: str) -> str | None:
        try:
            return str(self._ds[keyword].VR) if keyword in self._ds else None
        except Exception:
            return None

    def values(self, keyword: str) -> list[Any]:
        value = self._value(keyword)
        if value is None or value == "":
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return [value]
        return list(value)

    def items(self, keyword: str) -> list[AttributeSource]:
        value = self._value(keyword)
        if value is None or isinstance(value, (str, bytes)):
            return []
        try:
            return [DatasetSource(item) for item in value]
        except TypeError:
            return []

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]:
        value = self._value(keyword)
        if not isinstance(value, (bytes, bytearray)):
            return None, None
        data = bytes(value)
        encoding = getattr(self._ds, "original_encoding", (None, True))
        if encoding and encoding[1] is False and len(data) % 2 == 0:
            data = bytes(swap16(data))  # OW words of a big endian file
        return data, None


def swap16(data: bytes) -> bytearray:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return out


# Value coercion: never raise on malformed optional values.
def first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def as_floats(values: Sequence[Any]) -> tuple[float, ...] | None:
    out = tuple(as_float(v) for v in values)
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def first_int(src: AttributeSource, keyword: str, default: int | None = None) -> int | None:
    values = src.values(keyword)
    return as_int(values[0]) if values else default


def first_float(src: AttributeSource, keyword: str) -> float | None:
    values = src.values(keyword)
    return as_float(values[0]) if values else None


def first_str(src: AttributeSource, keyword: str) -> str | None:
    values = src.values(keyword)
    if not values or values[0] is None:
        return None
    text = str(values[0]).strip()
    return text or None


def vector(src: AttributeSource, keyword: str, n: int) -> tuple[float, ...] | None:
    values = as_floats(src.values(keyword))
    return values if values is not None and len(values) == n else None
