"""QIDO-RS (PS3.18 10.6): query parameters → a validated `SearchQuery` → DICOM JSON results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from dicomweb import attributes as attrs
from dicomweb.attributes import Kind, Level
from dicomweb.errors import BadRequest

DATE = re.compile(r"^\d{8}$")
TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
UID_VALUE = re.compile(r"^[0-9A-Za-z._-]+$")
CONTROL_PARAMETERS = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}


@dataclass(frozen=True)
class Condition:
    """One matching key: `path` is the attribute (several tags for sequence matching)."""

    parameter: str
    path: tuple[str, ...]
    value: str

    @property
    def tag(self) -> str:
        return self.path[0]


@dataclass
class SearchQuery:
    level: Level
    study: str | None = None
    series: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    include_fields: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0


def raw_query_pairs(query_string: str) -> list[tuple[str, str]]:
    """Split and percent-decode a query string. `+` stays a plus sign: DICOM values such as
    timezone offsets carry it, and PS3.18 8.3.3 uses RFC 3986 encoding, not forms."""
    pairs = []
    for item in query_string.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
    return pairs


def parse_search(
    query_string: str,
    level: Level,
    study: str | None = None,
    series: str | None = None,
    *,
    max_results: int,
) -> SearchQuery:
    search = SearchQuery(level=level, study=study, series=series)
    try:
        pairs = raw_query_pairs(query_string)
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8 after percent-decoding") from None
    seen: set[tuple[str, ...]] = set()
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:  # no DICOM value holds NUL (PostgreSQL refuses it)
            raise BadRequest(f"{name.replace(chr(0), '%00')!r}: a query value may not hold NUL "
                             "(%00)", parameter=name.replace("\x00", "%00"))
        lowered = name.lower()
        if lowered == "limit":
            search.limit = parse_count(name, value, minimum=1)
        elif lowered == "offset":
            search.offset = parse_count(name, value, minimum=0)
        elif lowered == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadRequest(
                    f"fuzzymatching must be true or false, not {value!r}", parameter=name
                )
            search.fuzzy = value.lower() == "true"
        elif lowered == "includefield":
            add_include_fields(search, name, value)
        elif lowered in CONTROL_PARAMETERS:
            continue
        else:
            path = parse_attribute_path(name)
            if path in seen:
                raise BadRequest(f"matching key {name} is given more than once", parameter=name)
            seen.add(path)
            if value == "":
                # Universal matching (PS3.4 C.2.2.2.3): no constraint, but returned.
                search.include_fields.add(path[0])
                continue
            validate_value(name, path, value)
            search.conditions.append(Condition(name, path, value))
    # PS3.18 8.3.4.4: at most the server's maximum; the Warning header says more exist.
    if search.limit is None or search.limit > max_results:
        search.limit = max_results
    return search


#: Largest limit/offset: what a 64-bit SQL integer holds (PostgreSQL bigint, SQLite INTEGER).
MAX_COUNT = 2**63 - 1


def parse_count(name: str, value: str, *, minimum: int) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", value.strip()):
        raise BadRequest(f"{name} must be an integer from {minimum} to {MAX_COUNT}",
                         parameter=name)
    number = int(value)
    if not minimum <= number <= MAX_COUNT:
        raise BadRequest(f"{name} must be an integer from {minimum} to {MAX_COUNT}",
                         parameter=name)
    return number


def add_include_fields(search: SearchQuery, name: str, value: str) -> None:
    # PS3.18 8.3.4.3: includefield is a comma-separated list, and may be repeated.
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() == "all":
            search.include_all = True
            continue
        path = parse_attribute_path(item, parameter=name)
        search.include_fields.add(path[0])


def parse_attribute_path(name: str, *, parameter: str | None = None) -> tuple[str, ...]:
    """`PatientName`, `00100010`, or a sequence path such as
    `RequestAttributesSequence.RequestedProcedureID`."""
    tags = []
    for part in name.split("."):
        tag = attrs.parse_attribute(part) if part else None  # pydicom maps "" to a tag
        if tag is None:
            message = (
                f"{parameter}: unknown attribute {name!r}"
                if parameter
                else f"unknown query parameter or attribute {name!r}"
            )
            raise BadRequest(message, parameter=parameter or name)
        tags.append(tag)
    return tuple(tags)


def validate_value(name: str, path: tuple[str, ...], value: str) -> None:
    searchable = attrs.SEARCHABLE.get(path[0]) if len(path) == 1 else None
    if searchable is None:
        return
    kind = searchable.kind
    if kind == Kind.DATE:
        check_range(name, value, DATE, "a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    elif kind == Kind.TIME:
        check_range(name, value.replace(":", ""), TIME, "a time HHMMSS.FFFFFF or a range")
    elif kind == Kind.INT:
        for item in split_list(value):
            if not re.fullmatch(r"[+-]?\d+", item):
                raise BadRequest(f"{name} must be an integer, not {value!r}", parameter=name)
    elif kind in (Kind.UID, Kind.SOP_CLASSES):
        for item in split_list(value):
            if not UID_VALUE.match(item):
                raise BadRequest(f"{name}: {item!r} is not a UID", parameter=name)


def check_range(name: str, value: str, pattern: re.Pattern[str], expected: str) -> None:
    low, dash, high = value.partition("-")
    ends = [low, high] if dash else [low]
    if dash and not (low or high):
        raise BadRequest(f"{name} must be {expected}, not {value!r}", parameter=name)
    for end in ends:
        if end and not pattern.match(end):
            raise BadRequest(f"{name} must be {expected}, not {value!r}", parameter=name)


def split_list(value: str) -> list[str]:
    """UID and value lists: PS3.18 says comma; OHIF sends backslash (DICOM multi-value)."""
    return [v for v in re.split(r"[,\\]", value) if v]
