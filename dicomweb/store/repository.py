"""The store: blobs first, then one index transaction per instance, so the index never
points at a missing file and a failure leaves the instance either whole or absent."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, MetaData, bindparam, delete, exists, select
from sqlalchemy.exc import IntegrityError

from dicomweb.config import Settings
from dicomweb.errors import (
    DUPLICATE_SOP_INSTANCE,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    InstanceRejected,
    NotFound,
)
from dicomweb.ingest import IngestedInstance, parse_part
from dicomweb.part10 import InflateLimits
from dicomweb.store.access import (
    ANY_WRITER,
    EVERY_STUDY,
    STUDY_LABELS,
    StudyFilter,
    StudyWriter,
    label_studies,
)
from dicomweb.store.blobs import BlobStore
from dicomweb.store.database import create_schema, make_engine
from dicomweb.store.tables import Instance, Patient, PendingBlob, Series, Study, utcnow

log = logging.getLogger(__name__)

PATIENTS = Patient.__table__
STUDIES = Study.__table__
SERIES = Series.__table__
INSTANCES = Instance.__table__
PENDING = PendingBlob.__table__
#: Pending blobs younger than this may belong to an upload in progress in another worker.
RECOVERY_GRACE = timedelta(minutes=10)
#: Journal rows of indexed instances are deleted this many at a time, in a later journal
#: transaction (a statement less per batch; a DIMSE C-STORE is a batch of one). A row a crash
#: leaves names an indexed blob, which recovery keeps (it only deletes the row).
SETTLED_BATCH = 32

#: Called inside the instance's index transaction; returns warnings (e.g. RT parse problems).
IndexHook = Callable[[Connection, IngestedInstance], list[str]]
#: Called inside a delete transaction with the SOP Instance UIDs being removed.
DeleteHook = Callable[[Connection, list[str]], None]


@dataclass
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    outcome: str  # "stored" | "duplicate" | "replaced"
    warnings: list[str] = field(default_factory=list)


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


@lru_cache(maxsize=16)
def insert_ignoring_duplicates(dialect: str, table_name: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, built once per table: a row another instance or
    worker already made is left as it is."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = TABLES_BY_NAME[table_name]
    return insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))


TABLES_BY_NAME = {t.name: t for t in (PATIENTS, STUDIES, SERIES, INSTANCES)}
INSTANCE_INSERT = INSTANCES.insert()
# Built once, their IN lists bound per call: a batch (or a DIMSE C-STORE of one instance)
# pays no statement construction.
EXISTING_SOPS = select(INSTANCES.c.sop_instance_uid).where(
    INSTANCES.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)
EXISTING_SOP = select(INSTANCES.c.sop_instance_uid).where(
    INSTANCES.c.sop_instance_uid == bindparam("uid")
)
FORGET_PENDING = delete(PENDING).where(PENDING.c.blob_key.in_(bindparam("keys", expanding=True)))


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.effective_database_url)
        self.blobs = BlobStore(settings.effective_blob_dir)
        self.inflate_limits = InflateLimits(settings.max_inflated_bytes,
                                            settings.max_inflate_ratio,
                                            settings.max_nested_elements)
        self.index_hooks: list[IndexHook] = []
        self.delete_hooks: list[DeleteHook] = []
        #: Tables of extensions (audit, access…), created with the index's by create_schema.
        self.extension_tables: list[MetaData] = []
        self._register_rt_hooks()
        #: Blob keys indexed whose journal rows are still to be deleted (SETTLED_BATCH).
        self._settled: list[str] = []
        self._settled_lock = threading.Lock()

    def _register_rt_hooks(self) -> None:
        from dicomweb.rt import indexing

        self.index_hooks.append(indexing.index_hook)
        self.delete_hooks.append(indexing.delete_hook)

    def register_tables(self, metadata: MetaData) -> None:
        if metadata not in self.extension_tables:
            self.extension_tables.append(metadata)

    def create_schema(self) -> None:
        """Make what the store keeps: the index schema (and registered extensions' tables),
        then the blob folders. The constructor creates nothing, so a start that fails before
        this leaves no trace."""
        create_schema(self.engine, self.extension_tables)
        self.blobs.create_folders()

    def close(self) -> None:
        try:
            self._forget_settled(0)
        except Exception as exc:  # the database is gone: recovery deletes the rows later
            log.info("journal rows of indexed instances left to recovery: %s", exc)
        self.engine.dispose()

    # --- writes -------------------------------------------------------------------------

    def store_file(self, temp_path: Path, *, expected_study: str | None = None) -> StoredInstance:
        """Ingest the complete Part 10 file at `temp_path` (consumed: moved or removed);
        raises InstanceRejected with the reason when it is not stored."""
        outcome = self.store_files([temp_path], expected_study=expected_study)[0]
        if isinstance(outcome, InstanceRejected):
            raise outcome
        return outcome

    def store_files(
        self, temp_paths: list[Path], *, expected_study: str | None = None,
        writer: StudyWriter = ANY_WRITER,
    ) -> list[StoredInstance | InstanceRejected]:
        """A batch of complete Part 10 files (one STOW request's parts; all consumed), parsed
        in this thread."""
        try:
            parsed = [self.parse(path, expected_study) for path in temp_paths]
        except BaseException:
            for path in temp_paths:
                path.unlink(missing_ok=True)
            raise
        return self.store_parsed(temp_paths, parsed, writer=writer)

    def parse(self, path: Path, expected_study: str | None) -> IngestedInstance | InstanceRejected:
        """One part parsed in this thread; any failure is that part's rejection."""
        try:
            return parse_part(path, expected_study, self.inflate_limits)
        except Exception as exc:  # that part's failure, not the batch's
            return rejection_for(exc)

    def store_parsed(
        self, temp_paths: list[Path], parsed_parts: list[IngestedInstance | InstanceRejected],
        *, writer: StudyWriter = ANY_WRITER,
    ) -> list[StoredInstance | InstanceRejected]:
        """Store a batch whose files are parsed already (`ingest.parse_part`, maybe in another
        process); the files are consumed.

        Each instance is still whole or absent, but the batch shares one duplicate query, one
        journal transaction, concurrent fdatasyncs and one index transaction. If that
        transaction fails, its instances are indexed one by one. Instances of an existing
        study `writer` may not add to are rejected; the studies stored get `writer.labels`.
        """
        outcomes: list[StoredInstance | InstanceRejected | None] = [None] * len(temp_paths)
        try:
            parsed: list[tuple[int, IngestedInstance, Path]] = []
            for position, (path, ingested) in enumerate(
                zip(temp_paths, parsed_parts, strict=True)
            ):
                if isinstance(ingested, InstanceRejected):
                    outcomes[position] = ingested
                else:
                    parsed.append((position, ingested, path))
            parsed = self._writable(parsed, outcomes, writer)
            labels = writer.labels
            fresh, one_by_one = self._journal_fresh(parsed, outcomes)
            try:
                for position, outcome in self._store_fresh(fresh, labels):
                    outcomes[position] = outcome
            except Exception as exc:  # e.g. a blob cannot be moved into place
                for position, *_ in fresh:
                    outcomes[position] = rejection_for(exc)
            for position, ingested, path in one_by_one:
                outcomes[position] = guarded(
                    lambda i=ingested, p=path: self._store_ingested(i, p, labels))
        finally:
            for path in temp_paths:
                self.blobs.discard(path)
        return [o for o in outcomes if o is not None]

    def _writable(
        self, parsed: list[tuple[int, IngestedInstance, Path]],
        outcomes: list[StoredInstance | InstanceRejected | None], writer: StudyWriter,
    ) -> list[tuple[int, IngestedInstance, Path]]:
        """The parsed instances `writer` may store; the others are rejected (and removed)."""
        if writer.studies.unrestricted or not parsed:
            return parsed
        studies = sorted({ingested.study_instance_uid for _, ingested, _ in parsed})
        with self.engine.connect() as connection:
            refused = {
                uid for (uid,) in connection.execute(
                    select(STUDIES.c.study_instance_uid).where(
                        STUDIES.c.study_instance_uid.in_(studies),
                        ~writer.may_add_to(STUDIES.c.study_instance_uid),
                    ))
            }
        kept = []
        for position, ingested, path in parsed:
            if ingested.study_instance_uid not in refused:
                kept.append((position, ingested, path))
                continue
            path.unlink(missing_ok=True)
            outcomes[position] = InstanceRejected(
                NOT_AUTHORIZED,
                f"study {ingested.study_instance_uid} exists and this caller may not add to it",
                sop_class_uid=ingested.sop_class_uid,
                sop_instance_uid=ingested.sop_instance_uid,
            )
        return kept

    def _journal_fresh(
        self, parsed: list[tuple[int, IngestedInstance, Path]],
        outcomes: list[StoredInstance | InstanceRejected | None],
    ) -> tuple[list[tuple[int, IngestedInstance, Path, str]],
               list[tuple[int, IngestedInstance, Path]]]:
        """Split the batch into instances not stored yet (each with its new blob key,
        journaled as pending) and duplicates or replacements, left to the careful path.

        The duplicate query and the journal insert share one transaction: one connection
        and commit less per batch, and a DIMSE C-STORE is a batch of one. On SQLite the
        query has ended (all rows fetched) before the driver begins the write transaction
        with the INSERT, so that never meets a stale read snapshot (SQLITE_BUSY_SNAPSHOT);
        an instance another writer stores in between is caught by the index insert, as
        before. If the journal cannot be written (disk full), the new instances are
        rejected and the others still take the careful path; if the query fails, the batch
        does. Journal rows of instances indexed earlier are deleted here too (SETTLED_BATCH)."""
        if not parsed:
            return [], []
        split: tuple[list[tuple[int, IngestedInstance, Path, str]],
                     list[tuple[int, IngestedInstance, Path]]] | None = None
        try:
            with self.engine.begin() as connection:
                stored = existing_sops(connection, [i.sop_instance_uid for _, i, _ in parsed])
                split = self._split_fresh(parsed, stored)
                if settled := self._take_settled(SETTLED_BATCH):
                    connection.execute(FORGET_PENDING, {"keys": settled})
                if split[0]:
                    now = utcnow()
                    connection.execute(PENDING.insert(), [
                        {"blob_key": key, "created_at": now} for *_, key in split[0]])
        except Exception as exc:
            if split is None:
                raise
            for position, *_ in split[0]:
                outcomes[position] = rejection_for(exc)
            return [], split[1]
        return split

    def _split_fresh(
        self, parsed: list[tuple[int, IngestedInstance, Path]], stored: set[str]
    ) -> tuple[list[tuple[int, IngestedInstance, Path, str]],
               list[tuple[int, IngestedInstance, Path]]]:
        fresh: list[tuple[int, IngestedInstance, Path, str]] = []
        one_by_one: list[tuple[int, IngestedInstance, Path]] = []
        seen: set[str] = set()
        for position, ingested, path in parsed:
            sop = ingested.sop_instance_uid
            if sop in stored or sop in seen:  # duplicates and replacements: the careful path
                one_by_one.append((position, ingested, path))
                continue
            seen.add(sop)
            key = self.blobs.new_key(ingested.study_instance_uid, ingested.series_instance_uid,
                                     sop)
            fresh.append((position, ingested, path, key))
        return fresh, one_by_one

    def _store_fresh(
        self, fresh: list[tuple[int, IngestedInstance, Path, str]], labels: frozenset[str]
    ) -> list[tuple[int, StoredInstance | InstanceRejected]]:
        """Blobs in place and indexed, for instances already journaled as pending."""
        if not fresh:
            return []
        keys = [key for *_, key in fresh]
        try:
            self.blobs.commit_many([(path, key) for _, _, path, key in fresh])
        except BaseException:
            for key in keys:
                self.blobs.remove(key)
                self._forget_pending(key)
            raise
        for _, ingested, _, key in fresh:
            self._moved(ingested, key)
        try:
            warnings = self._index_many(
                [(ingested, key) for _, ingested, _, key in fresh], labels, forget_now=False)
        except Exception:
            log.info("batch index failed; indexing %d instance(s) one by one", len(fresh))
            return [
                (position, guarded(lambda i=ingested, k=key: self._finish(i, k, None, labels)))
                for position, ingested, _, key in fresh
            ]
        with self._settled_lock:
            self._settled.extend(keys)
        return [
            (position, self._result(ingested, "stored", found))
            for (position, ingested, _, _), found in zip(fresh, warnings, strict=True)
        ]

    def _store_ingested(
        self, ingested: IngestedInstance, temp_path: Path, labels: frozenset[str] = frozenset()
    ) -> StoredInstance:
        row = ingested.instance_row
        key = self.blobs.new_key(
            ingested.study_instance_uid,
            ingested.series_instance_uid,
            ingested.sop_instance_uid,
        )
        existing = self._existing_or_journal(ingested.sop_instance_uid, key)
        replacing: str | None = None
        if existing is not None:
            old_sha, old_key = existing
            if old_sha == row["blob_sha256"]:
                return self._result(ingested, "duplicate")
            if self.settings.duplicates != "overwrite":
                raise InstanceRejected(
                    DUPLICATE_SOP_INSTANCE,
                    f"SOP Instance {ingested.sop_instance_uid} is already stored with different "
                    "content; the stored instance is kept",
                    sop_class_uid=ingested.sop_class_uid,
                    sop_instance_uid=ingested.sop_instance_uid,
                )
            replacing = old_key
            with self.engine.begin() as connection:
                connection.execute(PENDING.insert(), {"blob_key": key, "created_at": utcnow()})
        try:
            self.blobs.commit(temp_path, key)
        except BaseException:
            self._forget_pending(key)
            raise
        self._moved(ingested, key)
        return self._finish(ingested, key, replacing, labels)

    def _moved(self, ingested: IngestedInstance, key: str) -> None:
        # Values read lazily from now on come from the blob, not the consumed temp file.
        ingested.file_path = self.blobs.path(key)
        if ingested.dataset is not None:
            ingested.dataset.filename = str(ingested.file_path)

    def _finish(
        self, ingested: IngestedInstance, key: str, replacing: str | None,
        labels: frozenset[str] = frozenset(),
    ) -> StoredInstance:
        """Index an instance whose blob is in place and journaled; undo the blob on failure."""
        try:
            warnings = self._index(ingested, key, replacing is not None, labels)
        except IntegrityError:
            # Another request stored the same SOP Instance UID between our check and insert.
            self.blobs.remove(key)
            self._forget_pending(key)
            existing = self._existing(ingested.sop_instance_uid)
            if existing and existing[0] == ingested.instance_row["blob_sha256"]:
                return self._result(ingested, "duplicate")
            raise InstanceRejected(
                DUPLICATE_SOP_INSTANCE,
                f"SOP Instance {ingested.sop_instance_uid} was stored concurrently with "
                "different content",
                sop_class_uid=ingested.sop_class_uid,
                sop_instance_uid=ingested.sop_instance_uid,
            ) from None
        except BaseException:
            self.blobs.remove(key)
            self._forget_pending(key)
            raise
        if replacing:
            self.blobs.remove(replacing)
        return self._result(ingested, "replaced" if replacing else "stored", warnings)

    def _result(
        self, ingested: IngestedInstance, outcome: str, warnings: list[str] | None = None
    ) -> StoredInstance:
        return StoredInstance(
            sop_class_uid=ingested.sop_class_uid,
            sop_instance_uid=ingested.sop_instance_uid,
            study_instance_uid=ingested.study_instance_uid,
            series_instance_uid=ingested.series_instance_uid,
            outcome=outcome,
            warnings=[*ingested.warnings, *(warnings or [])],
        )

    def _take_settled(self, at_least: int) -> list[str]:
        with self._settled_lock:
            if not self._settled or len(self._settled) < at_least:
                return []
            taken, self._settled = self._settled, []
        return taken

    def _forget_settled(self, at_least: int) -> None:
        if settled := self._take_settled(at_least):
            with self.engine.begin() as connection:
                connection.execute(FORGET_PENDING, {"keys": settled})

    def _forget_pending(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(PENDING).where(PENDING.c.blob_key == key))

    def recover(self, grace: timedelta = RECOVERY_GRACE) -> int:
        """Remove blobs a crash left between their move into place and their index commit
        (and temp files whose writer is dead). Returns how many blobs were removed."""
        if swept := self.blobs.sweep_temp_files():
            log.warning("removed %d temp file(s) left by a dead process", swept)
        cutoff = utcnow() - grace
        with self.engine.connect() as connection:
            keys = [
                key
                for (key,) in connection.execute(
                    select(PENDING.c.blob_key).where(PENDING.c.created_at < cutoff)
                )
            ]
        removed = 0
        for key in keys:
            with self.engine.begin() as connection:
                indexed = connection.execute(
                    select(INSTANCES.c.sop_instance_uid).where(INSTANCES.c.blob_key == key)
                ).first()
                if indexed is None:
                    self.blobs.remove(key)
                    removed += 1
                connection.execute(delete(PENDING).where(PENDING.c.blob_key == key))
        if removed:
            log.warning("recovery removed %d blob(s) left by an interrupted store", removed)
        return removed

    def _existing_or_journal(self, sop_instance_uid: str, key: str) -> tuple[str, str] | None:
        """(sha256, blob key) of the stored instance; if there is none, journal `key` as
        pending in the same transaction (it is about to be moved into place)."""
        with self.engine.begin() as connection:
            found = connection.execute(
                select(INSTANCES.c.blob_sha256, INSTANCES.c.blob_key).where(
                    INSTANCES.c.sop_instance_uid == sop_instance_uid
                )
            ).first()
            if found is None:
                connection.execute(PENDING.insert(), {"blob_key": key, "created_at": utcnow()})
                return None
        return (found[0], found[1])

    def _existing(self, sop_instance_uid: str) -> tuple[str, str] | None:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(INSTANCES.c.blob_sha256, INSTANCES.c.blob_key).where(
                    INSTANCES.c.sop_instance_uid == sop_instance_uid
                )
            ).first()
        return (found[0], found[1]) if found else None

    def _index(
        self, ingested: IngestedInstance, blob_key: str, replace: bool,
        labels: frozenset[str] = frozenset(),
    ) -> list[str]:
        warnings: list[str] = []
        with self.engine.begin() as connection:
            if replace:
                self._delete_instance_rows(connection, [ingested.sop_instance_uid])
            dialect = connection.dialect.name
            for table, row in (
                (PATIENTS, ingested.patient_row),
                (STUDIES, ingested.study_row),
                (SERIES, ingested.series_row),
            ):
                statement = insert_ignoring_duplicates(dialect, table.name)
                connection.execute(statement, row)
            connection.execute(INSTANCE_INSERT, {**ingested.instance_row, "blob_key": blob_key})
            label_studies(connection, [ingested.study_instance_uid], labels)
            connection.execute(delete(PENDING).where(PENDING.c.blob_key == blob_key))
            for hook in self.index_hooks:
                warnings.extend(hook(connection, ingested))
        return warnings

    def index_existing(self, items: list[tuple[IngestedInstance, str]]) -> None:
        """Bulk loading: index parsed instances whose blobs are already in place under the
        given keys, in one transaction (the benchmark fills large stores with it)."""
        self._index_many(items)

    def _index_many(
        self, items: list[tuple[IngestedInstance, str]], labels: frozenset[str] = frozenset(),
        forget_now: bool = True,
    ) -> list[list[str]]:
        """One transaction for a batch: parents once each, instances in one executemany.
        The journal rows of `items` are deleted in it, or later when not `forget_now`."""
        warnings: list[list[str]] = []
        with self.engine.begin() as connection:
            dialect = connection.dialect.name
            for table, rows in (
                (PATIENTS, {i.patient_row["patient_key"]: i.patient_row for i, _ in items}),
                (STUDIES, {i.study_instance_uid: i.study_row for i, _ in items}),
                (SERIES, {i.series_instance_uid: i.series_row for i, _ in items}),
            ):
                connection.execute(
                    insert_ignoring_duplicates(dialect, table.name), list(rows.values())
                )
            connection.execute(
                INSTANCE_INSERT,
                [{**ingested.instance_row, "blob_key": key} for ingested, key in items],
            )
            label_studies(connection, sorted({i.study_instance_uid for i, _ in items}), labels)
            if forget_now:
                connection.execute(FORGET_PENDING, {"keys": [key for _, key in items]})
            for ingested, _ in items:
                found: list[str] = []
                for hook in self.index_hooks:
                    found.extend(hook(connection, ingested))
                warnings.append(found)
        return warnings

    # --- delete -------------------------------------------------------------------------

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
                raise NotFound(f"no instance matches {_describe(study, series, sop)}")
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

    # --- reads --------------------------------------------------------------------------

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
            raise NotFound(f"no instance matches {_describe(study, series, sop)}")
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
            raise NotFound(f"no instance matches {_describe(study, series, sop)}")
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
        INSTANCES.c.frames_json if with_frames else _null(),
        INSTANCES.c.bulk_json if with_bulk else _null(),
        INSTANCES.c.metadata_json if with_metadata else _null(),
    ]
    statement = select(*columns).where(INSTANCES.c.study_instance_uid == bindparam("study"))
    if by_series:
        statement = statement.where(INSTANCES.c.series_instance_uid == bindparam("series"))
    if by_sop:
        statement = statement.where(INSTANCES.c.sop_instance_uid == bindparam("sop"))
    return statement.order_by(
        INSTANCES.c.series_instance_uid,
        INSTANCES.c.instance_number,
        INSTANCES.c.sop_instance_uid,
    )


@lru_cache(maxsize=8)
def blob_keys_statement(by_series: bool, by_sop: bool) -> Any:
    statement = select(INSTANCES.c.blob_key).where(
        INSTANCES.c.study_instance_uid == bindparam("study")
    )
    if by_series:
        statement = statement.where(INSTANCES.c.series_instance_uid == bindparam("series"))
    if by_sop:
        statement = statement.where(INSTANCES.c.sop_instance_uid == bindparam("sop"))
    return statement.order_by(
        INSTANCES.c.series_instance_uid,
        INSTANCES.c.instance_number,
        INSTANCES.c.sop_instance_uid,
    )


def guarded(store_one: Callable[[], StoredInstance]) -> StoredInstance | InstanceRejected:
    """One instance's outcome: stored, or rejected with the PS3.18 reason its failure means."""
    try:
        return store_one()
    except InstanceRejected as rejected:
        return rejected
    except Exception as exc:
        return rejection_for(exc)


#: errno values and SQLSTATE class / SQLite text that mean the disk or a quota is full.
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    original = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if getattr(original, "sqlstate", None) in ("53100", "53200"):  # disk full, out of memory
        return True
    return "database or disk is full" in str(original or "")


def rejection_for(exc: BaseException) -> InstanceRejected:
    """An unexpected failure while storing one instance, in words; the details to the log."""
    if is_out_of_space(exc):
        log.error("storing an instance failed: out of space (%s)", exc)
        return InstanceRejected(OUT_OF_RESOURCES, "the server is out of disk space")
    if isinstance(exc, (OSError, MemoryError)):
        log.exception("storing an instance failed while writing")
        return InstanceRejected(OUT_OF_RESOURCES, "the server could not write the instance")
    log.exception("storing an instance failed")
    return InstanceRejected(PROCESSING_FAILURE, "the server could not store the instance "
                            "(the reason is in its log)")


def _null() -> Any:
    from sqlalchemy import null

    return null()


def _describe(study: str, series: str | None, sop: str | None) -> str:
    text = f"study {study}"
    if series:
        text += f", series {series}"
    if sop:
        text += f", instance {sop}"
    return text


def existing_sops(connection: Connection, sop_instance_uids: list[str]) -> set[str]:
    """Those of `sop_instance_uids` that are indexed (every row fetched: on SQLite the read
    ends with the statement)."""
    if len(sop_instance_uids) == 1:  # a DIMSE C-STORE: no IN list to render for each call
        return set(connection.execute(EXISTING_SOP, {"uid": sop_instance_uids[0]}).scalars())
    found: set[str] = set()
    for chunk in chunks(sop_instance_uids, 500):
        found.update(uid for (uid,) in connection.execute(EXISTING_SOPS, {"uids": list(chunk)}))
    return found


def chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
