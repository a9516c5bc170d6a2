"""The batch path of ingest: instances not stored yet, journaled together, their blobs
fdatasynced together and indexed in one transaction (a STOW request's parts; a DIMSE C-STORE
is a batch of one). Duplicates and replacements take `Store`'s careful one-by-one path."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from dicomweb.errors import NOT_AUTHORIZED, InstanceRejected
from dicomweb.ingest import IngestedInstance
from dicomweb.store.access import StudyWriter, label_studies
from dicomweb.store.blobs import BlobStore
from dicomweb.store.deletion import chunks
from dicomweb.store.outcomes import StoredInstance, guarded, rejection_for
from dicomweb.store.statements import forget_pending, insert_rows, select_existing_sops
from dicomweb.store.tables import INSTANCES, PATIENTS, PENDING, SERIES, STUDIES

log = logging.getLogger("dicomweb.store.repository")  # the name these records always had

#: Journal rows of indexed instances are deleted this many at a time, in a later journal
#: transaction (a statement less per batch; a DIMSE C-STORE is a batch of one). A row a crash
#: leaves names an indexed blob, which recovery keeps (it only deletes the row).
SETTLED_BATCH = 32

#: Per position in the batch: its outcome, or None while it is still to be stored.
Outcomes = list[StoredInstance | InstanceRejected | None]


class BatchIngest:
    """The batch half of `Store`'s writes (`Store.store_parsed` calls it); an instance whose
    batch index transaction fails is indexed by `Store._finish`, one by one."""

    engine: Engine
    blobs: BlobStore
    index_hooks: list
    _settled: list[str]
    _settled_lock: threading.Lock

    def _writable(
        self, parsed: list[tuple[int, IngestedInstance, Path]],
        outcomes: Outcomes, writer: StudyWriter,
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
        outcomes: Outcomes,
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
                    forget_all_pending(connection, settled)
                if split[0]:
                    insert_rows(connection, PENDING, [{"blob_key": key} for *_, key in split[0]])
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

    def _take_settled(self, at_least: int) -> list[str]:
        with self._settled_lock:
            if not self._settled or len(self._settled) < at_least:
                return []
            taken, self._settled = self._settled, []
        return taken

    def _forget_settled(self, at_least: int) -> None:
        if settled := self._take_settled(at_least):
            with self.engine.begin() as connection:
                forget_all_pending(connection, settled)

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
            for table, rows in (
                (PATIENTS, {i.patient_row["patient_key"]: i.patient_row for i, _ in items}),
                (STUDIES, {i.study_instance_uid: i.study_row for i, _ in items}),
                (SERIES, {i.series_instance_uid: i.series_row for i, _ in items}),
            ):
                insert_rows(connection, table, list(rows.values()), ignore_duplicates=True)
            insert_rows(connection, INSTANCES,
                        [{**ingested.instance_row, "blob_key": key} for ingested, key in items])
            label_studies(connection, sorted({i.study_instance_uid for i, _ in items}), labels)
            if forget_now:
                forget_all_pending(connection, [key for _, key in items])
            for ingested, _ in items:
                found: list[str] = []
                for hook in self.index_hooks:
                    found.extend(hook(connection, ingested))
                warnings.append(found)
        return warnings



def existing_sops(connection: Connection, sop_instance_uids: list[str]) -> set[str]:
    """Those of `sop_instance_uids` that are indexed (every row fetched: on SQLite the read
    ends with the statement)."""
    found: set[str] = set()
    for chunk in chunks(sop_instance_uids, 500):
        found |= select_existing_sops(connection, chunk)
    return found


def forget_all_pending(connection: Connection, keys: list[str]) -> None:
    for chunk in chunks(keys, 500):
        forget_pending(connection, chunk)
