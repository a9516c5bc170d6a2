"""Deleting instances: their rows, then the series, studies and patients left empty, then
their blobs (a crash in between leaves blobs without rows, which recovery removes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Engine, delete, exists, select

from dicomweb.errors import NotFound
from dicomweb.store.access import EVERY_STUDY, STUDY_LABELS, StudyFilter
from dicomweb.store.blobs import BlobStore
from dicomweb.store.reads import describe
from dicomweb.store.tables import INSTANCES, PATIENTS, SERIES, STUDIES


class Deletion:
    """The delete half of `Store`."""

    engine: Engine
    blobs: BlobStore
    delete_hooks: list

    def delete(self, study: str, series: str | None = None, sop: str | None = None, *,
               access: StudyFilter = EVERY_STUDY) -> int:
        """Remove instances, then empty series/studies/patients, then their blobs."""
        condition = INSTANCES.c.study_instance_uid == study
        if not access.unrestricted:
            condition &= access.clause(INSTANCES.c.study_instance_uid)
        if series is not None:
            condition &= INSTANCES.c.series_instance_uid == series
        if sop is not None:
            condition &= INSTANCES.c.sop_instance_uid == sop
        with self.engine.begin() as connection:
            found = connection.execute(
                select(INSTANCES.c.sop_instance_uid, INSTANCES.c.blob_key).where(condition)
            ).all()
            if not found:
                raise NotFound(f"no instance matches {describe(study, series, sop)}")
            self._delete_instance_rows(connection, [uid for uid, _ in found])
        for _, blob_key in found:
            self.blobs.remove(blob_key)
        return len(found)

    def _delete_instance_rows(self, connection: Connection, sop_uids: list[str]) -> None:
        """Remove instances, then those of their series, studies and patients left empty.
        Only the parents of these instances are examined: the cost does not grow with the
        store."""
        for hook in self.delete_hooks:
            hook(connection, sop_uids)
        series: set[str] = set()
        studies: set[str] = set()
        for chunk in chunks(sop_uids, 500):
            parents = select(INSTANCES.c.series_instance_uid, INSTANCES.c.study_instance_uid)
            for series_uid, study_uid in connection.execute(
                parents.where(INSTANCES.c.sop_instance_uid.in_(chunk))
            ):
                series.add(series_uid)
                studies.add(study_uid)
            connection.execute(delete(INSTANCES).where(INSTANCES.c.sop_instance_uid.in_(chunk)))
        patients: set[str] = set()
        for chunk in chunks(sorted(studies), 500):
            patients.update(key for (key,) in connection.execute(
                select(STUDIES.c.patient_key).where(STUDIES.c.study_instance_uid.in_(chunk))))
        for chunk in chunks(sorted(series), 500):
            connection.execute(delete(SERIES).where(
                SERIES.c.series_instance_uid.in_(chunk),
                ~exists().where(INSTANCES.c.series_instance_uid == SERIES.c.series_instance_uid),
            ))
        for chunk in chunks(sorted(studies), 500):
            connection.execute(delete(STUDY_LABELS).where(
                STUDY_LABELS.c.study_instance_uid.in_(chunk),
                ~exists().where(SERIES.c.study_instance_uid == STUDY_LABELS.c.study_instance_uid),
            ))
            connection.execute(delete(STUDIES).where(
                STUDIES.c.study_instance_uid.in_(chunk),
                ~exists().where(SERIES.c.study_instance_uid == STUDIES.c.study_instance_uid),
            ))
        for chunk in chunks(sorted(patients), 500):
            connection.execute(delete(PATIENTS).where(
                PATIENTS.c.patient_key.in_(chunk),
                ~exists().where(STUDIES.c.patient_key == PATIENTS.c.patient_key),
            ))


def chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
