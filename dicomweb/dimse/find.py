"""C-FIND SCP (PS3.4 C.4.1, C.6.1 Patient Root, C.6.2 Study Root): a request Identifier
becomes QIDO's `SearchQuery`, matched by the same engine; each match becomes a response
Identifier holding the requested keys.

Matching follows PS3.4 C.2.2.2 as QIDO does it: single value, list of UIDs or values
(backslash), wildcards `*` `?`, date/time ranges, universal (zero length), sequence matching
with one item. Queries are hierarchical (C.4.1.2.1): a unique key of a level above the
query level must be a single value; a missing one widens the search as a relational query
would, as Orthanc and dcm4chee do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import _encode_string_impl, _encode_string_parts, convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom import sop_class

from dicomweb import attributes as attrs
from dicomweb.attributes import Level
from dicomweb.errors import BadRequest
from dicomweb.qido import Condition, SearchQuery, validate_value

# PS3.4 Table C.4-1 (C-FIND statuses of the Query/Retrieve Service Class).
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PROCESS = 0xC000
PENDING = 0xFF00
CANCEL = 0xFE00

PATIENT_ROOT = "PATIENT"
STUDY_ROOT = "STUDY"
ROOT_OF_MODEL = {
    sop_class.PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    sop_class.PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
    sop_class.PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT,
}
#: Query/Retrieve levels of each model, top first (PS3.4 Tables C.6.1-1 and C.6.2-1).
LEVELS = {
    PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    STUDY_ROOT: ("STUDY", "SERIES", "IMAGE"),
}
UNIQUE_KEY = {
    "PATIENT": attrs.key("PatientID"),
    "STUDY": attrs.key("StudyInstanceUID"),
    "SERIES": attrs.key("SeriesInstanceUID"),
    "IMAGE": attrs.key("SOPInstanceUID"),
}
QIDO_LEVEL = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
QUERY_RETRIEVE_LEVEL = Tag("QueryRetrieveLevel")
SPECIFIC_CHARACTER_SET = Tag("SpecificCharacterSet")
RETRIEVE_AE_TITLE = Tag("RetrieveAETitle")
#: Returned when asked for, never matched on (computed, or about the response itself).
RETURN_ONLY = {
    SPECIFIC_CHARACTER_SET,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    Tag("InstanceAvailability"),
    Tag("NumberOfPatientRelatedStudies"),
    Tag("NumberOfPatientRelatedSeries"),
    Tag("NumberOfPatientRelatedInstances"),
    Tag("NumberOfStudyRelatedSeries"),
    Tag("NumberOfStudyRelatedInstances"),
    Tag("NumberOfSeriesRelatedInstances"),
}
TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
UTF8 = "ISO_IR 192"
#: Set on every response by `response_identifier` itself.
RETURN_ONLY_FILLED = {
    int(tag) for tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE)
}


class IdentifierError(Exception):
    """The request Identifier cannot be processed; `status` is the PS3.4 status to answer."""

    def __init__(self, message: str, tag: int | None = None,
                 status: int = IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.status = status


@dataclass
class FindRequest:
    root: str
    level: str  # PATIENT | STUDY | SERIES | IMAGE
    query: SearchQuery
    identifier: Dataset
    charset: list[str] | None = None
    #: Top-level tags of the request, in order: the keys every response carries.
    keys: list[int] = field(default_factory=list)


def query_level(identifier: Dataset, root: str) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS[root]:
        raise IdentifierError(
            f"Query/Retrieve Level {level or '(none)'!r} is not one of "
            f"{', '.join(LEVELS[root])} of the {root.title()} Root model",
            QUERY_RETRIEVE_LEVEL,
        )
    return level


def key_value(elem: DataElement) -> str | None:
    """A matching key's value in DICOM's own text form (lists joined by backslash);
    None for universal matching (zero length)."""
    value = elem.value
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        parts = [str(v) for v in value]
        return "\\".join(parts) if any(parts) else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).strip(" \x00")
    return text or None


def parse_identifier(identifier: Dataset, root: str, max_results: int) -> FindRequest:
    """Raise IdentifierError (PS3.4 A900) for an Identifier the model cannot answer."""
    level = query_level(identifier, root)
    charset = identifier.get("SpecificCharacterSet")
    request = FindRequest(
        root=root,
        level=level,
        query=SearchQuery(level=QIDO_LEVEL.get(level, Level.STUDY), limit=max_results),
        identifier=identifier,
        charset=list(charset) if isinstance(charset, MultiValue) else
        ([charset] if charset else None),
    )
    above = LEVELS[root][: LEVELS[root].index(level)]
    upper_unique = {UNIQUE_KEY[name] for name in above}
    for elem in identifier:
        tag = int(elem.tag)
        if elem.tag.group < 0x0008 or elem.tag.element == 0:
            continue  # command or group length elements do not belong in an Identifier
        request.keys.append(tag)
        if elem.tag in RETURN_ONLY or elem.tag.is_private:
            continue
        hex_tag = f"{tag:08X}"
        name = keyword_for_tag(tag) or hex_tag
        if elem.VR == "SQ":
            add_sequence_keys(request.query, elem, hex_tag, name)
            continue
        value = key_value(elem)
        request.query.include_fields.add(hex_tag)
        if value is None:
            continue  # universal matching: a return key
        if hex_tag in upper_unique and ("\\" in value or "*" in value or "?" in value):
            raise IdentifierError(
                f"{name} is the unique key of a level above {level}: it must be a single "
                "value (PS3.4 C.4.1.2.1)",
                tag,
            )
        try:
            validate_value(name, (hex_tag,), value)
        except BadRequest as exc:
            raise IdentifierError(exc.message, tag) from None
        request.query.conditions.append(Condition(name, (hex_tag,), value))
    return request


def add_sequence_keys(query: SearchQuery, elem: DataElement, hex_tag: str, name: str) -> None:
    """Sequence matching (PS3.4 C.2.2.2.6): the values in the one item are matched inside
    the stored sequence's items; an empty sequence or item is a return key."""
    query.include_fields.add(hex_tag)
    if not elem.value:
        return
    if len(elem.value) > 1:
        raise IdentifierError(f"{name}: a sequence matching key holds one item", int(elem.tag))
    for inner in elem.value[0]:
        if inner.VR == "SQ":
            continue  # nested sequence matching is not supported: treated as a return key
        value = key_value(inner)
        if value is not None:
            path = (hex_tag, f"{int(inner.tag):08X}")
            query.conditions.append(Condition(f"{name}.{inner.keyword or path[1]}", path, value))


# --- responses ------------------------------------------------------------------------------


def wait_until_sent(assoc: Any, spin_s: float = 0.002, pause_s: float = 0.001) -> None:
    """Block until the association's DUL thread has sent every queued PDU.

    pynetdicom's handler only queues a response; its DUL thread sends before it reads, so a
    query whose matches are all queued at once holds them all in memory and reads the peer's
    C-CANCEL only after the last is sent. Waiting keeps one match in flight. A send usually
    takes microseconds: the GIL is handed over at once for `spin_s` (sleeping 1 ms per match
    made a 400-match query 0.31 → 0.52 s), then polled gently, for a peer slow to read."""
    outgoing = assoc.dul.to_provider_queue
    spin_until = time.monotonic() + spin_s
    while outgoing.qsize() and assoc.is_alive():
        time.sleep(0 if time.monotonic() < spin_until else pause_s)


def response_identifier(match: dict[str, Any], request: FindRequest, ae_title: str) -> Dataset:
    """PS3.4 C.4.1.1.3.2: the keys of the request with this match's values (zero length when
    it has none), the unique keys of its level and above, the level and the Retrieve AE Title;
    Specific Character Set when the values need one."""
    levels = LEVELS[request.root]
    unique = {UNIQUE_KEY[name] for name in levels[: levels.index(request.level) + 1]}
    wanted = {f"{tag:08X}" for tag in request.keys} | unique
    values = {
        tag: entry for tag, entry in match.items()
        if tag in wanted and "BulkDataURI" not in entry and tag != "00080005"
    }
    ds = Dataset.from_json(values)
    for tag in request.keys:
        if tag not in ds and tag not in RETURN_ONLY_FILLED:
            ds.add(empty_element(request.identifier[tag]))
        elif tag in ds and request.identifier[tag].VR == "SQ":
            keep_requested_items(ds[tag], request.identifier[tag])
    ds.QueryRetrieveLevel = request.level
    ds.RetrieveAETitle = ae_title
    charset = response_charset(ds, request.charset)
    if charset:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    return ds


def empty_element(requested: DataElement) -> DataElement:
    vr = requested.VR
    if vr in ("UN", "") and not requested.tag.is_private:
        vr = dictionary_VR(requested.tag)
    return DataElement(requested.tag, vr, Sequence() if vr == "SQ" else None)


def keep_requested_items(found: DataElement, requested: DataElement) -> None:
    """Return only the attributes a sequence key's item asked for (all when it asked none)."""
    wanted = {int(e.tag) for item in requested.value for e in item}
    if not wanted:
        return
    for item in found.value:
        for tag in [int(e.tag) for e in item if int(e.tag) not in wanted]:
            del item[tag]


def response_charset(ds: Dataset, requested: list[str] | None) -> list[str] | None:
    """The request's character set when it can encode the values (PS3.4 C.4.1.1.3.2);
    UTF-8 when it cannot; none when the values are in the default repertoire and none
    was asked."""
    texts = list(text_values(ds))
    if all(t.isascii() for t in texts):
        return requested
    if requested and all(encodable(t, requested) for t in texts):
        return requested
    return [UTF8]


def text_values(ds: Dataset) -> Iterator[str]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from text_values(item)
        elif elem.VR in TEXT_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            yield from (str(v) for v in values)


def encodable(text: str, charset: list[str]) -> bool:
    """Whether the Specific Character Set can encode `text` without loss. pydicom's own
    encoder, called strictly (its public one replaces what it cannot encode)."""
    encodings = convert_encodings(charset)
    for encoding in encodings:
        try:
            _encode_string_impl(text, encoding)
            return True
        except UnicodeError:
            continue
    if len(encodings) > 1:
        try:
            _encode_string_parts(text, encodings)
            return True
        except (ValueError, UnicodeError):
            return False
    return False
