"""Reads of the index that retrieves, metadata and ZIP downloads make: where each instance's
blob is and what it holds (frames, bulk data, DICOM JSON), without parsing DICOM."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Engine, bindparam, null, select

from dicomweb.errors import NotFound
from dicomweb.store.access import EVERY_STUDY, StudyFilter
from dicomweb.store.tables import INSTANCES, SERIES, STUDIES


@dataclass(frozen=True)
class InstanceLocation:
    """What a retrieve needs of one instance, without parsing it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    number_of_frames: int | None
    frames_json: bytes | None = None
    bulk_json: bytes | None = None
    metadata_json: bytes | None = None

    @property
    def frames(self) -> list[list[list[int]]] | None:
        return orjson.loads(self.frames_json) if self.frames_json else None



@dataclass(frozen=True)
class ArchiveRow:
    """One instance of a ZIP download, with the values its file name is made of."""

    blob_key: str
    sop_instance_uid: str
    instance_number: int | None
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str


class IndexReads:
    """The read half of `Store`."""

    engine: Engine

    def locate(
        self,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        *,
        with_frames: bool = False,
        with_bulk: bool = False,
        with_metadata: bool = False,
        access: StudyFilter = EVERY_STUDY,
    ) -> list[InstanceLocation]:
        """Instances of a study/series/instance in a stable order; NotFound if none (also
        when `access` does not let the caller see the study)."""
        statement = locate_statement(
            series is not None, sop is not None, with_frames, with_bulk, with_metadata
        )
        if not access.unrestricted:
            statement = statement.where(access.clause(INSTANCES.c.study_instance_uid))
        with self.engine.connect() as connection:
            rows = connection.execute(
                statement, {"study": study, "series": series, "sop": sop}
            ).all()
        if not rows:
            raise NotFound(f"no instance matches {describe(study, series, sop)}")
        return [InstanceLocation(*row) for row in rows]

    def blob_keys(self, study: str, series: str | None = None, sop: str | None = None) -> list[str]:
        """Blob keys of a study/series/instance, in `locate` order: its content version (each
        stored version of an instance has its own key). [] if nothing matches."""
        statement = blob_keys_statement(series is not None, sop is not None)
        with self.engine.connect() as connection:
            rows = connection.execute(statement, {"study": study, "series": series, "sop": sop})
            return [key for (key,) in rows]

    def archive_rows(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[ArchiveRow]:
        """What a ZIP download needs to name each file, in `locate` order; NotFound if none."""
        condition = INSTANCES.c.study_instance_uid == study
        if series is not None:
            condition &= INSTANCES.c.series_instance_uid == series
        if sop is not None:
            condition &= INSTANCES.c.sop_instance_uid == sop
        statement = (
            select(
                INSTANCES.c.blob_key, INSTANCES.c.sop_instance_uid, INSTANCES.c.instance_number,
                SERIES.c.series_instance_uid, SERIES.c.modality, SERIES.c.series_number,
                SERIES.c.series_description, STUDIES.c.study_instance_uid,
                STUDIES.c.patient_id, STUDIES.c.patient_name, STUDIES.c.study_date,
                STUDIES.c.study_description,
            )
            .join(SERIES, SERIES.c.series_instance_uid == INSTANCES.c.series_instance_uid)
            .join(STUDIES, STUDIES.c.study_instance_uid == INSTANCES.c.study_instance_uid)
            .where(condition)
            .order_by(SERIES.c.series_number, INSTANCES.c.series_instance_uid,
                      INSTANCES.c.instance_number, INSTANCES.c.sop_instance_uid)
        )
        with self.engine.connect() as connection:
            rows = [ArchiveRow(*row) for row in connection.execute(statement)]
        if not rows:
            raise NotFound(f"no instance matches {describe(study, series, sop)}")
        return rows

    def metadata_rows(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[bytes]:
        return [
            loc.metadata_json or b"{}"
            for loc in self.locate(study, series, sop, with_metadata=True)
        ]


@lru_cache(maxsize=64)
def locate_statement(
    by_series: bool, by_sop: bool, with_frames: bool, with_bulk: bool, with_metadata: bool
) -> Any:
    """Built once per shape: a frame request pays for no query construction."""
    columns = [
        INSTANCES.c.study_instance_uid,
        INSTANCES.c.series_instance_uid,
        INSTANCES.c.sop_instance_uid,
        INSTANCES.c.sop_class_uid,
        INSTANCES.c.transfer_syntax_uid,
        INSTANCES.c.blob_key,
        INSTANCES.c.number_of_frames,
        INSTANCES.c.frames_json if with_frames else null(),
        INSTANCES.c.bulk_json if with_bulk else null(),
        INSTANCES.c.metadata_json if with_metadata else null(),
    ]
    return of_resource(select(*columns), by_series, by_sop)


@lru_cache(maxsize=8)
def blob_keys_statement(by_series: bool, by_sop: bool) -> Any:
    return of_resource(select(INSTANCES.c.blob_key), by_series, by_sop)


def of_resource(statement: Any, by_series: bool, by_sop: bool) -> Any:
    """`statement` limited to the instances of a study, series or instance (bound as `study`,
    `series`, `sop`), in retrieve order."""
    statement = statement.where(INSTANCES.c.study_instance_uid == bindparam("study"))
    if by_series:
        statement = statement.where(INSTANCES.c.series_instance_uid == bindparam("series"))
    if by_sop:
        statement = statement.where(INSTANCES.c.sop_instance_uid == bindparam("sop"))
    return statement.order_by(
        INSTANCES.c.series_instance_uid,
        INSTANCES.c.instance_number,
        INSTANCES.c.sop_instance_uid,
    )


def describe(study: str, series: str | None, sop: str | None) -> str:
    text = f"study {study}"
    if series:
        text += f", series {series}"
    if sop:
        text += f", instance {sop}"
    return text
