"""One instance in: parse, validate, and precompute everything reads will need.

Reads never parse DICOM: ingest stores the instance's DICOM JSON, the level attributes QIDO
returns, the byte ranges of each frame, and the byte ranges of bulk elements.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydicom import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomweb import attributes as attrs
from dicomweb.dicomjson import DicomJsonEncoder, subset
from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    InstanceRejected,
)
from dicomweb.part10 import InflateLimits, PixelDataLocation, parse_failure, read_dataset

log = logging.getLogger(__name__)

UID_PATTERN = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
ITEM_TAG = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32: group first
SEQUENCE_DELIMITER_TAG = 0xE0DDFFFE


@dataclass
class IngestedInstance:
    """What the store needs to index one instance; rows are plain column → value dicts."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_row: dict[str, Any]
    study_row: dict[str, Any]
    series_row: dict[str, Any]
    instance_row: dict[str, Any]
    #: The parsed dataset; None once it has crossed from an ingest worker process (see
    #: `ingest_pool`): readers that need it re-read `file_path`.
    dataset: Dataset | None
    warnings: list[str] = field(default_factory=list)
    #: Where the file is now: the received temp file, then its blob once committed.
    file_path: Path | None = None
    #: An RT object's index rows (`rt.indexing.RtIndexRows`), built with the parse; None for
    #: other instances and until built.
    rt_rows: Any = None


def instance_path(study: str, series: str, sop: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{sop}"


@lru_cache(maxsize=64)
def tag_of(keyword: str) -> BaseTag:
    """A keyword's tag, as the Tag pydicom's lookups take without converting it again."""
    return Tag(keyword)


def uid_text(ds: Dataset, keyword: str) -> str:
    """A UID element's text read from its raw bytes (what pydicom's UI conversion gives, less
    its cost); '' when absent."""
    elem = ds.get_item(tag_of(keyword))
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \x00")
    return str(value or "").strip()


def required_uid(ds: Dataset, keyword: str, sop: str | None = None) -> str:
    value = uid_text(ds, keyword)
    if not value:
        raise InstanceRejected(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"missing {keyword} {attrs_tag(keyword)}",
            sop_class_uid=uid_text(ds, "SOPClassUID") or None,
            sop_instance_uid=sop,
        )
    if not UID_PATTERN.match(value):
        raise InstanceRejected(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"{keyword} {value!r} is not a valid UID",
            sop_instance_uid=sop,
        )
    return value


def attrs_tag(keyword: str) -> str:
    hex_tag = attrs.key(keyword)
    return f"({hex_tag[:4]},{hex_tag[4:]})"


class JsonValues:
    """Top-level values as the instance's DICOM JSON holds them. The encoder has decoded each
    element once; asking pydicom again (`Dataset.get` converts and validates the element) cost
    about as much as the rest of ingest together. The results are pydicom's (tests compare)."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def _values(self, keyword: str) -> list[Any]:
        entry = self.metadata.get(attrs.key(keyword))
        return entry.get("Value", []) if entry else []

    def text(self, keyword: str) -> str:
        values = [json_value_text(v) for v in self._values(keyword)]
        if len(values) == 1:
            return values[0].strip()
        return "\\".join(values)

    def integer(self, keyword: str) -> int | None:
        values = self._values(keyword)
        if len(values) != 1:
            return None
        try:
            return int(values[0]) if values[0] not in (None, "") else None
        except (TypeError, ValueError):
            return None


PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def json_value_text(value: Any) -> str:
    """A DICOM JSON value as pydicom's str() of the element value gives it; a person name is
    its components joined by '=' (PS3.5 6.2), as in the file."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return "=".join(value[c] for c in PERSON_NAME_GROUPS if c in value)
    return str(value)


def normalise_time(value: str) -> str:
    """TM as a sortable string (ACR-NEMA style colons removed)."""
    return value.replace(":", "").strip()


def ingest_file(
    path: Path, *, expected_study: str | None = None, limits: InflateLimits = InflateLimits()
) -> IngestedInstance:
    """Parse and validate the Part 10 file at `path`; raise InstanceRejected with the reason."""
    ds, pixels, scan = read_dataset(path, limits)
    sop = uid_text(ds, "SOPInstanceUID") or None
    sop_instance_uid = required_uid(ds, "SOPInstanceUID")
    sop_class_uid = required_uid(ds, "SOPClassUID", sop)
    study_uid = required_uid(ds, "StudyInstanceUID", sop)
    series_uid = required_uid(ds, "SeriesInstanceUID", sop)
    if expected_study is not None and study_uid != expected_study:
        raise InstanceRejected(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"Study Instance UID {study_uid} does not match the target study {expected_study}",
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
        )
    transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    if not transfer_syntax:
        raise InstanceRejected(
            CANNOT_UNDERSTAND,
            "File Meta Information has no Transfer Syntax UID",
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
        )
    file_size = scan.size
    try:
        encoder = DicomJsonEncoder(instance_path(study_uid, series_uid, sop_instance_uid))
        metadata = encoder.encode(ds)
        if pixels is not None:
            metadata.update(
                encoder.add_pixel_data(pixels.tag, pixels.vr, pixels.value_offset, pixels.length)
            )
            metadata = dict(sorted(metadata.items()))
        values = JsonValues(metadata)
        frames = frame_ranges(ds, values, pixels, path, file_size, transfer_syntax)
    except InstanceRejected:
        raise
    except Exception as exc:  # pydicom converts values lazily: damage shows up here too
        rejected = parse_failure(exc)
        rejected.sop_class_uid, rejected.sop_instance_uid = sop_class_uid, sop_instance_uid
        raise rejected from exc
    locatable = transfer_syntax != DeflatedExplicitVRLittleEndian
    bulk = {p: [r.offset, r.length, r.vr] for p, r in encoder.bulk_ranges.items()}
    patient_name = values.text("PatientName")
    referring = values.text("ReferringPhysicianName")
    patient_id = values.text("PatientID")
    issuer = values.text("IssuerOfPatientID")
    patient_key = f"{patient_id}\\{issuer}"
    description = values.text("StudyDescription")
    return IngestedInstance(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        transfer_syntax_uid=transfer_syntax,
        dataset=ds,
        file_path=path,
        warnings=encoder.problems,
        patient_row={
            "patient_key": patient_key,
            "patient_id": patient_id,
            "issuer_of_patient_id": issuer,
            "patient_name": patient_name,
            "patient_birth_date": values.text("PatientBirthDate"),
            "patient_sex": values.text("PatientSex"),
        },
        study_row={
            "study_instance_uid": study_uid,
            "patient_key": patient_key,
            "patient_id": patient_id,
            "patient_name": patient_name,
            "patient_name_fold": patient_name.casefold(),
            "patient_birth_date": values.text("PatientBirthDate"),
            "patient_sex": values.text("PatientSex"),
            "study_date": values.text("StudyDate"),
            "study_time": normalise_time(values.text("StudyTime")),
            "accession_number": values.text("AccessionNumber"),
            "study_id": values.text("StudyID"),
            "study_description": description,
            "study_description_fold": description.casefold(),
            "referring_physician_name": referring,
            "referring_physician_name_fold": referring.casefold(),
            "study_json": orjson.dumps(subset(metadata, attrs.STUDY_LEVEL_KEYS)),
        },
        series_row={
            "series_instance_uid": series_uid,
            "study_instance_uid": study_uid,
            "modality": values.text("Modality"),
            "series_number": values.integer("SeriesNumber"),
            "series_description": values.text("SeriesDescription"),
            "series_date": values.text("SeriesDate"),
            "series_time": normalise_time(values.text("SeriesTime")),
            "performed_procedure_step_start_date": values.text("PerformedProcedureStepStartDate"),
            "performed_procedure_step_start_time": normalise_time(
                values.text("PerformedProcedureStepStartTime")
            ),
            "body_part_examined": values.text("BodyPartExamined"),
            "frame_of_reference_uid": values.text("FrameOfReferenceUID"),
            "series_json": orjson.dumps(subset(metadata, attrs.SERIES_LEVEL_KEYS)),
        },
        instance_row={
            "sop_instance_uid": sop_instance_uid,
            "series_instance_uid": series_uid,
            "study_instance_uid": study_uid,
            "sop_class_uid": sop_class_uid,
            "instance_number": values.integer("InstanceNumber"),
            "transfer_syntax_uid": transfer_syntax,
            "rows": values.integer("Rows"),
            "columns": values.integer("Columns"),
            "bits_allocated": values.integer("BitsAllocated"),
            "number_of_frames": values.integer("NumberOfFrames")
            or (1 if pixels is not None or "PixelData" in ds else None),
            "blob_size": file_size,
            "blob_sha256": scan.sha256,
            "metadata_json": orjson.dumps(metadata),
            "frames_json": orjson.dumps(frames) if frames is not None and locatable else None,
            "bulk_json": orjson.dumps(bulk) if bulk and locatable else None,
        },
    )


def parse_part(
    path: Path, expected_study: str | None = None, limits: InflateLimits = InflateLimits()
) -> IngestedInstance | InstanceRejected:
    """`ingest_file`, with a rejection as the value rather than raised (batches, pools), and
    an RT object's index rows built here too (in the ingest process, not the server's)."""
    from dicomweb.rt._dicom import rt_kind_of  # rt imports this module

    try:
        ingested = ingest_file(path, expected_study=expected_study, limits=limits)
    except InstanceRejected as rejected:
        return rejected
    if rt_kind_of(ingested.sop_class_uid, ingested.series_row["modality"]) is None:
        return ingested  # an image: the worker never imports the RT tables and their stack
    from dicomweb.rt.indexing import attach_rt_rows

    return attach_rt_rows(ingested)


# --- frames -------------------------------------------------------------------------------


def frame_ranges(
    ds: Dataset,
    values: JsonValues,
    pixels: PixelDataLocation | None,
    path: Path,
    file_size: int,
    transfer_syntax: str,
) -> list[list[list[int]]] | None:
    """Per frame, the [offset, length] ranges of its bytes in the file (several fragments for
    an encapsulated frame split across items). None when there is no pixel data or the frames
    cannot be located without decoding (then reads fall back to parsing the file)."""
    if pixels is None or pixels.tag != 0x7FE00010:
        return None
    offset, length = pixels.value_offset, pixels.length
    frame_count = values.integer("NumberOfFrames") or 1
    if pixels.encapsulated:
        with path.open("rb") as fp:
            fragments = fragment_ranges(fp, offset, file_size)
        return group_fragments(ds, path, fragments, frame_count)
    if offset + length > file_size:
        raise InstanceRejected(
            CANNOT_UNDERSTAND,
            f"truncated file: Pixel Data needs {offset + length} bytes, the file has {file_size}",
        )
    rows, columns = values.integer("Rows") or 0, values.integer("Columns") or 0
    samples = values.integer("SamplesPerPixel") or 1
    bits = values.integer("BitsAllocated") or 0
    if values.text("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # PS3.3 C.7.6.3.1.2: two values per pixel when native 4:2:2
    frame_bits = rows * columns * samples * bits
    needed = (frame_bits * frame_count + 7) // 8  # 1-bit frames are packed (PS3.5 8.1.1)
    if needed > length:
        raise InstanceRejected(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"Pixel Data has {length} bytes, but Rows x Columns x Samples per Pixel x Bits "
            f"Allocated x Number of Frames ({rows} x {columns} x {samples} x {bits} x "
            f"{frame_count}) needs {needed}",
        )
    if frame_bits == 0 or frame_bits % 8:
        return None  # e.g. 1-bit frames that do not end on a byte boundary
    frame_length = frame_bits // 8
    return [[[offset + i * frame_length, frame_length]] for i in range(frame_count)]


def fragment_ranges(fp: BinaryIO, offset: int, file_size: int) -> list[tuple[int, int]]:
    """Items of encapsulated Pixel Data (PS3.5 A.4): [(value offset, length)], the Basic
    Offset Table first."""
    items: list[tuple[int, int]] = []
    position = offset
    while True:
        fp.seek(position)
        header = fp.read(8)
        if len(header) < 8:
            raise InstanceRejected(
                CANNOT_UNDERSTAND, "truncated file: encapsulated Pixel Data has no delimiter"
            )
        tag, length = struct.unpack("<II", header)
        if tag == SEQUENCE_DELIMITER_TAG:
            return items
        if tag != ITEM_TAG:
            raise InstanceRejected(
                CANNOT_UNDERSTAND,
                f"encapsulated Pixel Data: unexpected tag {tag:08X} at {position}",
            )
        if position + 8 + length > file_size:
            raise InstanceRejected(CANNOT_UNDERSTAND, "truncated file: a pixel fragment is cut")
        items.append((position + 8, length))
        position += 8 + length


def group_fragments(
    ds: Dataset, path: Path, items: list[tuple[int, int]], frame_count: int
) -> list[list[list[int]]] | None:
    if not items:
        return None
    basic_offset_table, fragments = items[0], items[1:]
    if not fragments:
        return None
    if frame_count > len(fragments):
        raise InstanceRejected(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"Number of Frames is {frame_count}, but the encapsulated Pixel Data has "
            f"{len(fragments)} fragments (each frame takes at least one, PS3.5 A.4)",
        )
    if frame_count == 1:
        return [[[o, n] for o, n in fragments]]
    starts = frame_starts(ds, path, basic_offset_table, fragments, frame_count)
    if starts is None:
        if len(fragments) == frame_count:
            return [[[o, n]] for o, n in fragments]
        return None
    first_item = fragments[0][0] - 8
    by_start = {o - 8 - first_item: i for i, (o, _) in enumerate(fragments)}
    indices = [by_start.get(s) for s in starts]
    if any(i is None for i in indices):
        return None
    bounds = [*indices, len(fragments)]
    return [[[o, n] for o, n in fragments[bounds[f] : bounds[f + 1]]] for f in range(frame_count)]


def frame_starts(
    ds: Dataset,
    path: Path,
    basic_offset_table: tuple[int, int],
    fragments: list[tuple[int, int]],
    frame_count: int,
) -> list[int] | None:
    """Frame offsets relative to the first fragment item: Extended Offset Table, else the
    Basic Offset Table (PS3.5 A.4)."""
    if "ExtendedOffsetTable" in ds:
        raw = bytes(ds.ExtendedOffsetTable)
        values = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
        return values if len(values) == frame_count else None
    bot_offset, bot_length = basic_offset_table
    if bot_length == 0:
        return None
    with path.open("rb") as fp:
        fp.seek(bot_offset)
        table = fp.read(bot_length)
    values = list(struct.unpack(f"<{len(table) // 4}I", table))
    return values if len(values) == frame_count else None
