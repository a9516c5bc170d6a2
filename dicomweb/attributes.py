"""Which attributes live at which level, which are returned by default, and how each
searchable attribute is matched (PS3.18 Tables 10.6.1-5 and 10.6.3-3/-4/-5)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from pydicom.datadict import dictionary_keyword, keyword_for_tag, tag_for_keyword


@lru_cache(maxsize=4096)  # ingest asks for the same few dozen keywords for every instance
def key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def keys(*keywords: str) -> frozenset[str]:
    return frozenset(key(k) for k in keywords)


class Level(str, Enum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


COMMON_KEYS = keys("SpecificCharacterSet", "TimezoneOffsetFromUTC")

#: Patient, General Study and Patient Study module attributes kept per study.
STUDY_LEVEL_KEYS = COMMON_KEYS | keys(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingService",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
)

#: General Series, Frame of Reference and General Equipment attributes kept per series.
SERIES_LEVEL_KEYS = COMMON_KEYS | keys(
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "Laterality",
    "SeriesDate",
    "SeriesTime",
    "PerformingPhysicianName",
    "ProtocolName",
    "SeriesDescription",
    "SeriesDescriptionCodeSequence",
    "OperatorsName",
    "ReferencedPerformedProcedureStepSequence",
    "BodyPartExamined",
    "PatientPosition",
    "RequestAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "StationName",
    "ManufacturerModelName",
)

# Returned by default (PS3.18 Tables 10.6.3-3..5), plus what OHIF reads without asking.
STUDY_DEFAULT_KEYS = COMMON_KEYS | keys(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "IssuerOfPatientID",
)
SERIES_DEFAULT_KEYS = COMMON_KEYS | keys(
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "BodyPartExamined",
)
INSTANCE_DEFAULT_KEYS = COMMON_KEYS | keys(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

# Computed attributes (PS3.18 Table 10.6.3-2 and friends).
MODALITIES_IN_STUDY = key("ModalitiesInStudy")
SOP_CLASSES_IN_STUDY = key("SOPClassesInStudy")
STUDY_RELATED_SERIES = key("NumberOfStudyRelatedSeries")
STUDY_RELATED_INSTANCES = key("NumberOfStudyRelatedInstances")
SERIES_RELATED_INSTANCES = key("NumberOfSeriesRelatedInstances")
RETRIEVE_URL = key("RetrieveURL")
INSTANCE_AVAILABILITY = key("InstanceAvailability")
MODALITY = key("Modality")
STUDY_INSTANCE_UID = key("StudyInstanceUID")
SERIES_INSTANCE_UID = key("SeriesInstanceUID")
SOP_INSTANCE_UID = key("SOPInstanceUID")


class Kind(str, Enum):
    UID = "uid"
    TEXT = "text"  # case-sensitive string, wildcards allowed
    PN = "pn"  # person name: fuzzy matching applies
    DATE = "date"
    TIME = "time"
    INT = "int"
    MODALITIES = "modalities"  # ModalitiesInStudy: any series of the study matches
    SOP_CLASSES = "sop_classes"


@dataclass(frozen=True)
class Searchable:
    """An attribute QIDO matches with SQL on an indexed column of `level`'s table."""

    keyword: str
    level: Level
    column: str
    kind: Kind
    fold_column: str | None = None  # case-folded copy for fuzzy matching


SEARCHABLE: dict[str, Searchable] = {
    key(s.keyword): s
    for s in [
        Searchable("StudyInstanceUID", Level.STUDY, "study_instance_uid", Kind.UID),
        Searchable("PatientID", Level.STUDY, "patient_id", Kind.TEXT),
        Searchable("PatientName", Level.STUDY, "patient_name", Kind.PN, "patient_name_fold"),
        Searchable("PatientBirthDate", Level.STUDY, "patient_birth_date", Kind.DATE),
        Searchable("PatientSex", Level.STUDY, "patient_sex", Kind.TEXT),
        Searchable("StudyDate", Level.STUDY, "study_date", Kind.DATE),
        Searchable("StudyTime", Level.STUDY, "study_time", Kind.TIME),
        Searchable("AccessionNumber", Level.STUDY, "accession_number", Kind.TEXT),
        Searchable("StudyID", Level.STUDY, "study_id", Kind.TEXT),
        Searchable(
            "StudyDescription",
            Level.STUDY,
            "study_description",
            Kind.TEXT,
            "study_description_fold",
        ),
        Searchable(
            "ReferringPhysicianName",
            Level.STUDY,
            "referring_physician_name",
            Kind.PN,
            "referring_physician_name_fold",
        ),
        Searchable("ModalitiesInStudy", Level.STUDY, "modality", Kind.MODALITIES),
        Searchable("SOPClassesInStudy", Level.STUDY, "sop_class_uid", Kind.SOP_CLASSES),
        Searchable("SeriesInstanceUID", Level.SERIES, "series_instance_uid", Kind.UID),
        Searchable("Modality", Level.SERIES, "modality", Kind.TEXT),
        Searchable("SeriesNumber", Level.SERIES, "series_number", Kind.INT),
        Searchable("SeriesDescription", Level.SERIES, "series_description", Kind.TEXT),
        Searchable("SeriesDate", Level.SERIES, "series_date", Kind.DATE),
        Searchable("SeriesTime", Level.SERIES, "series_time", Kind.TIME),
        Searchable(
            "PerformedProcedureStepStartDate",
            Level.SERIES,
            "performed_procedure_step_start_date",
            Kind.DATE,
        ),
        Searchable(
            "PerformedProcedureStepStartTime",
            Level.SERIES,
            "performed_procedure_step_start_time",
            Kind.TIME,
        ),
        Searchable("BodyPartExamined", Level.SERIES, "body_part_examined", Kind.TEXT),
        Searchable("FrameOfReferenceUID", Level.SERIES, "frame_of_reference_uid", Kind.UID),
        Searchable("SOPInstanceUID", Level.INSTANCE, "sop_instance_uid", Kind.UID),
        Searchable("SOPClassUID", Level.INSTANCE, "sop_class_uid", Kind.UID),
        Searchable("InstanceNumber", Level.INSTANCE, "instance_number", Kind.INT),
        Searchable("Rows", Level.INSTANCE, "rows", Kind.INT),
        Searchable("Columns", Level.INSTANCE, "columns", Kind.INT),
        Searchable("BitsAllocated", Level.INSTANCE, "bits_allocated", Kind.INT),
        Searchable("NumberOfFrames", Level.INSTANCE, "number_of_frames", Kind.INT),
    ]
}


def parse_attribute(name: str) -> str | None:
    """`PatientName` or `00100010` (any case) → "00100010"; None if it is neither."""
    if len(name) == 8:
        try:
            number = int(name, 16)
        except ValueError:
            number = None
        if number is not None:
            return f"{number:08X}"
    tag = tag_for_keyword(name)
    return f"{tag:08X}" if tag is not None else None


def keyword_of(tag_hex: str) -> str:
    number = int(tag_hex, 16)
    return keyword_for_tag(number) or dictionary_keyword_safe(number) or tag_hex


def dictionary_keyword_safe(number: int) -> str:
    try:
        return dictionary_keyword(number)
    except KeyError:
        return ""
