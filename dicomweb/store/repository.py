"""The store: blobs first, then one index transaction per instance, so the index never
points at a missing file and a failure leaves the instance either whole or absent.

Here the entry points and the careful one-by-one path (duplicates, replacements, a batch
whose index transaction failed); the batch path is in `batches`, deletes in `deletion`,
reads in `reads`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Connection, MetaData, delete, select
from sqlalchemy.exc import IntegrityError

from dicomweb.config import Settings
from dicomweb.errors import DUPLICATE_SOP_INSTANCE, InstanceRejected
from dicomweb.ingest import IngestedInstance, parse_part
from dicomweb.part10 import InflateLimits
from dicomweb.store.access import ANY_WRITER, StudyWriter, label_studies
from dicomweb.store.batches import BatchIngest
from dicomweb.store.blobs import BlobStore
from dicomweb.store.database import create_schema, make_engine
from dicomweb.store.deletion import Deletion
from dicomweb.store.outcomes import StoredInstance, guarded, rejection_for
from dicomweb.store.reads import (  # noqa: F401  (other modules import them from here)
    ArchiveRow,
    IndexReads,
    InstanceLocation,
)
from dicomweb.store.statements import forget_pending, insert_rows
from dicomweb.store.tables import (  # noqa: F401  (other modules import them from here)
    INSTANCES,
    PATIENTS,
    PENDING,
    SERIES,
    STUDIES,
    utcnow,
)

log = logging.getLogger(__name__)

#: Pending blobs younger than this may belong to an upload in progress in another worker.
RECOVERY_GRACE = timedelta(minutes=10)

#: Called inside the instance's index transaction; returns warnings (e.g. RT parse problems).
IndexHook = Callable[[Connection, IngestedInstance], list[str]]
#: Called inside a delete transaction with the SOP Instance UIDs being removed.
DeleteHook = Callable[[Connection, list[str]], None]


class Store(BatchIngest, Deletion, IndexReads):
    """The store: writes here and in `BatchIngest`, deletes in `Deletion`, reads in
    `IndexReads`."""

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
        journal transaction, the disk's writeback of all its files (then each file's
        fdatasync) and one index transaction. If that transaction fails, its instances are
        indexed one by one. Instances of an existing
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
            for table, row in (
                (PATIENTS, ingested.patient_row),
                (STUDIES, ingested.study_row),
                (SERIES, ingested.series_row),
            ):
                insert_rows(connection, table, [row], ignore_duplicates=True)
            insert_rows(connection, INSTANCES, [{**ingested.instance_row, "blob_key": blob_key}])
            label_studies(connection, [ingested.study_instance_uid], labels)
            forget_pending(connection, [blob_key])
            for hook in self.index_hooks:
                warnings.extend(hook(connection, ingested))
        return warnings
