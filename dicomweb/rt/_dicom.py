"""Tolerant attribute accessors shared by the RT parsers.

Every accessor takes a ``warnings`` list and appends a human-readable message instead of
raising when a value is missing or malformed, so that a broken RT object can still be
indexed and its problems reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .errors import NotAnRtObject

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
RTPLAN_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
RTIONPLAN_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.8"
RTDOSE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
SPATIAL_REGISTRATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_REGISTRATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.3"
RTRECORD_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.4"
RTIONRECORD_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.9"
RECORD_SOP_CLASSES = (RTRECORD_SOP_CLASS, RTIONRECORD_SOP_CLASS)

#: The RT objects with index rows of their own, by SOP Class.
INDEXED_KINDS = {
    RTSTRUCT_SOP_CLASS: "RTSTRUCT", RTPLAN_SOP_CLASS: "RTPLAN", RTIONPLAN_SOP_CLASS: "RTPLAN",
    RTDOSE_SOP_CLASS: "RTDOSE", SPATIAL_REGISTRATION_SOP_CLASS: "REG",
    DEFORMABLE_REGISTRATION_SOP_CLASS: "REG", **dict.fromkeys(RECORD_SOP_CLASSES, "RTRECORD"),
}


def rt_kind_of(sop_class: str, modality: str) -> str | None:
    """'RTSTRUCT', 'RTPLAN', 'RTDOSE', 'REG', 'RTRECORD' or None; the Modality decides only
    when the SOP Class is missing. Light (no tables, no scipy): ingest workers ask it."""
    if sop_class in INDEXED_KINDS:
        return INDEXED_KINDS[sop_class]
    return modality if not sop_class and modality in ("RTSTRUCT", "RTPLAN", "RTDOSE",
                                                      "RTRECORD") else None


def check_kind(
    ds: Dataset, sop_classes: Sequence[str], modalities: Sequence[str], what: str
) -> None:
    """Raise :class:`NotAnRtObject` unless the SOP Class or the Modality match."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "")
    if sop_class in sop_classes or (not sop_class and modality in modalities):
        return
    if sop_class == "" and modality == "":
        # Neither attribute: accept, the caller will warn about the missing Type 1 values.
        return
    raise NotAnRtObject(f"not {what}: SOP Class {sop_class or '?'}, Modality {modality or '?'}")


def text(
    ds: Dataset, keyword: str, warnings: list[str] | None = None, ctx: str = ""
) -> str | None:
    """A string value, or None (with a warning when ``warnings`` is given) if absent/empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is missing")
        return None
    return str(value).strip()


def integer(
    ds: Dataset, keyword: str, warnings: list[str] | None = None, ctx: str = ""
) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is missing")
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is not an integer: {value!r}")
        return None


def number(
    ds: Dataset, keyword: str, warnings: list[str] | None = None, ctx: str = ""
) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is missing")
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is not a number: {value!r}")
        return None


def numbers(
    ds: Dataset,
    keyword: str,
    warnings: list[str] | None = None,
    ctx: str = "",
    count: int | None = None,
) -> np.ndarray | None:
    """A multi-valued numeric attribute as a float64 array (``count`` values if given)."""
    arr = _raw_decimals(ds, keyword)
    if arr is None:
        value = ds.get(keyword)
        if value is None or value == "":
            if warnings is not None:
                warnings.append(f"{ctx}{keyword} is missing")
            return None
        try:
            seq = list(value) if _is_multi(value) else [value]
            arr = np.asarray([float(v) for v in seq], dtype=np.float64)
        except (TypeError, ValueError):
            if warnings is not None:
                warnings.append(f"{ctx}{keyword} is not numeric")
            return None
    if count is not None and arr.size != count:
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} has {arr.size} values, expected {count}")
        return None
    if not np.all(np.isfinite(arr)):
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} has non-finite values")
        return None
    return arr


def _raw_decimals(ds: Dataset, keyword: str) -> np.ndarray | None:
    """A DS/IS value parsed by numpy from its raw bytes (PS3.5 6.2: backslash-separated
    decimal strings), skipping pydicom's per-value DSfloat objects: ContourData of a large
    structure set holds millions of values. None when not raw or not plainly numeric (the
    caller's pydicom path then decides, with its warnings)."""
    elem = ds.get_item(keyword)
    value = getattr(elem, "value", None)
    if not isinstance(value, bytes) or getattr(elem, "VR", None) not in ("DS", "IS"):
        return None
    text = value.decode("ascii", "replace").strip(" \x00")
    if not text:
        return None
    try:
        return np.array(text.split("\\"), dtype=np.float64)
    except ValueError:
        return None


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def sequence(
    ds: Dataset, keyword: str, warnings: list[str] | None = None, ctx: str = ""
) -> list[Dataset]:
    """Items of a sequence attribute ([] when absent, with a warning if ``warnings`` given)."""
    value = ds.get(keyword)
    if not value:
        if warnings is not None:
            warnings.append(f"{ctx}{keyword} is missing or empty")
        return []
    return list(value)


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    items = sequence(ds, keyword)
    return items[0] if items else None


def uids(items: list[Dataset], keyword: str = "ReferencedSOPInstanceUID") -> list[str]:
    out: list[str] = []
    for item in items:
        value = item.get(keyword)
        if value:
            out.append(str(value))
    return out
