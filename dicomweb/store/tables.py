"""The index: Patient → Study → Series → Instance, as SQLModel tables.

Columns hold what QIDO matches on (decoded, authentic values from the files) and what reads
serve without parsing DICOM: each instance's DICOM JSON and the byte ranges of its frames and
bulk data inside its blob. Computed attributes (counts, ModalitiesInStudy) are aggregated at
query time from indexed columns, so concurrent writers never race on counters.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

UID = 64


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Patient(SQLModel, table=True):
    __tablename__ = "patients"

    patient_key: str = Field(primary_key=True, max_length=200)  # PatientID + "\\" + Issuer
    patient_id: str = Field(default="", index=True)
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    updated_at: datetime = Field(default_factory=utcnow)


def prefix_index(table: str, column: str) -> Index:
    """For `column LIKE 'Smi%'` (QIDO's `*` wildcards) on PostgreSQL: its plain btree index
    serves LIKE only under the C collation; the pattern operator class serves it under any.
    SQLite's LIKE uses the plain index (case_sensitive_like, store.database)."""
    return Index(f"ix_{table}_{column}_prefix", column,
                 postgresql_ops={column: "varchar_pattern_ops"}).ddl_if(dialect="postgresql")


class Study(SQLModel, table=True):
    __tablename__ = "studies"
    # The study list's order (newest first, QIDO without filters as OHIF sends it): read from
    # this index, a page costs the same with a thousand studies or a million, even when many
    # share a date.
    __table_args__ = (
        Index("ix_studies_list_order", text("study_date DESC"), text("study_time DESC"),
              "study_instance_uid"),
        prefix_index("studies", "patient_name"),
        prefix_index("studies", "patient_id"),
        prefix_index("studies", "accession_number"),
    )

    study_instance_uid: str = Field(primary_key=True, max_length=UID)
    patient_key: str = Field(index=True, max_length=200)
    patient_id: str = Field(default="", index=True)
    patient_name: str = Field(default="", index=True)
    patient_name_fold: str = Field(default="", index=True)
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = Field(default="", index=True)
    study_time: str = ""
    accession_number: str = Field(default="", index=True)
    study_id: str = ""
    study_description: str = ""
    study_description_fold: str = ""
    referring_physician_name: str = ""
    referring_physician_name_fold: str = ""
    #: Patient- and study-level attributes in DICOM JSON (orjson bytes).
    study_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Series(SQLModel, table=True):
    __tablename__ = "series"
    # ModalitiesInStudy matching probes series by study first (a correlated EXISTS).
    __table_args__ = (Index("ix_series_study_modality", "study_instance_uid", "modality"),)

    series_instance_uid: str = Field(primary_key=True, max_length=UID)
    study_instance_uid: str = Field(index=True, max_length=UID)
    modality: str = Field(default="", index=True)
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    performed_procedure_step_start_date: str = ""
    performed_procedure_step_start_time: str = ""
    body_part_examined: str = ""
    frame_of_reference_uid: str = Field(default="", index=True)
    #: Series-level attributes in DICOM JSON (orjson bytes).
    series_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Instance(SQLModel, table=True):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_series_order", "series_instance_uid", "instance_number"),
        Index("ix_instances_study_class", "study_instance_uid", "sop_class_uid"),
    )

    sop_instance_uid: str = Field(primary_key=True, max_length=UID)
    series_instance_uid: str = Field(index=True, max_length=UID)
    study_instance_uid: str = Field(index=True, max_length=UID)
    sop_class_uid: str = Field(default="", index=True)
    instance_number: int | None = None
    transfer_syntax_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    blob_key: str = Field(max_length=400)
    blob_size: int = 0
    blob_sha256: str = Field(default="", max_length=64)
    #: The instance in DICOM JSON, BulkDataURIs under a placeholder root (see dicomjson).
    metadata_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    #: orjson list, per frame, of [offset, length] byte ranges in the blob; None if not indexable.
    frames_json: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    #: orjson {bulk path: [offset, length, vr]} for bulk data elements outside Pixel Data.
    bulk_json: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class PendingBlob(SQLModel, table=True):
    """A file moved into the blob folder whose index transaction has not committed yet.

    Written before the move and deleted by the index transaction itself, so after a crash
    every blob without an index row is listed here and recovery removes it.
    """

    __tablename__ = "pending_blobs"

    blob_key: str = Field(primary_key=True, max_length=400)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class StudyLabel(SQLModel, table=True):
    """A label on a study: the unit of per-study access (`--study-access labels`), as in
    Orthanc's authorization plugin and dcm4chee's access control IDs."""

    __tablename__ = "study_labels"

    study_instance_uid: str = Field(primary_key=True, max_length=UID)
    label: str = Field(primary_key=True, max_length=64, index=True)


# The tables, for Core statements.
PATIENTS = Patient.__table__
STUDIES = Study.__table__
SERIES = Series.__table__
INSTANCES = Instance.__table__
PENDING = PendingBlob.__table__
