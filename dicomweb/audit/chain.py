"""The hash chain: appending records in one serialized order, indexing them, and checking them.

Each record's hash is SHA-256 over its canonical content (every column but `hash`, including
`prev_hash`, the hash of the record before it). Appends from every worker and host take one
lock first (PostgreSQL: a transaction-scoped advisory lock; SQLite: BEGIN IMMEDIATE, the
database's write lock), read the head, and write gapless sequence numbers, so the chain has one
order. Changing, inserting or deleting a row afterwards breaks it where the change was made,
and `audit.verify` names that record.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, event, select

from dicomweb.audit import tables
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.store.database import make_engine
from dicomweb.store.tables import Patient, Study

GENESIS = "0" * 64
HEAD_ID = 1
#: Any 64-bit constant other than the schema lock's: held while one transaction appends.
PG_CHAIN_LOCK = 0x41554454
RECORDS, INDEX, HEAD = tables.records, tables.index, tables.head
STUDIES, PATIENTS = Study.__table__, Patient.__table__  # type: ignore[attr-defined]
RECORD_COLUMNS = tuple(str(c.name) for c in RECORDS.columns)
#: Columns of a record covered by its hash (all but `hash`).
HASHED_COLUMNS = tuple(name for name in RECORD_COLUMNS if name != "hash")
INDEX_COLUMNS = ("seq", "item", "study_instance_uid", "patient_id")
PEOPLE = tables.people
PEOPLE_COLUMNS = ("seq", "event_time", "who", "client_id")
LOOKUP_CHUNK = 500
INSERT_CHUNK = 200  # rows per INSERT: 200 x 17 columns stays under SQLite's 32766 variables
INDEX_BATCH = 5000  # records indexed per transaction, at most
#: audit_index rows written per transaction, at most: a QIDO record names every study it found
#: (up to 1,000 each), and one batch must not hold the write lock for seconds.
INDEX_ROWS = 10000
#: audit_index rows of the records in (first, last]: one per study a record names, `item` its
#: place in the record's list (0-based).
INDEX_FROM_JSON_SQLITE = (
    f"INSERT INTO {INDEX.name} (seq, item, study_instance_uid, patient_id) "
    "SELECT r.seq, j.key, json_extract(j.value, '$.study'), "
    "json_extract(j.value, '$.patient_id') "
    f"FROM {RECORDS.name} r, json_each(r.studies) j WHERE r.seq > {{mark}} AND r.seq <= {{mark}}")
INDEX_FROM_JSON_POSTGRES = (
    f"INSERT INTO {INDEX.name} (seq, item, study_instance_uid, patient_id) "
    "SELECT r.seq, j.item - 1, j.value ->> 'study', j.value ->> 'patient_id' "
    f"FROM {RECORDS.name} r CROSS JOIN LATERAL "
    "json_array_elements(r.studies::json) WITH ORDINALITY AS j(value, item) "
    "WHERE r.seq > {mark} AND r.seq <= {mark}")
#: The idle checkpoint restarts SQLite's WAL once it holds more frames (pages) than this
#: (16 MiB of 4 KiB pages), waiting at most RESTART_WAIT_MS for readers and writers.
WAL_RESTART_FRAMES = 4096
RESTART_WAIT_MS = 10


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical form: the hashed columns, keys sorted, compact JSON."""
    body = {name: record[name] for name in HASHED_COLUMNS}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def studies_json(subjects: Sequence[Subject]) -> str:
    return orjson.dumps([
        {"study": s.study, "patient_id": (s.patient or (None, None))[0],
         "issuer": (s.patient or (None, None))[1], "series": s.series,
         "instances": s.instances}
        for s in subjects
    ]).decode()


def record_row(seq: int, prev_hash: str, event: AuditEvent) -> dict[str, Any]:
    """The hashed columns of a record, keys in sorted order: the dict is its own canonical
    form (see `canonical_hash`)."""
    return {
        "action": event.action, "client_address": event.client_address,
        "client_id": event.client_id, "event_time": event.event_time, "method": event.method,
        "operation": event.operation, "path": event.path, "prev_hash": prev_hash,
        "query": event.query, "request_id": event.request_id, "seq": seq,
        "status": event.status, "studies": studies_json(event.subjects),
        "user_kind": event.user_kind, "who": event.who,
    }


def canonical_hash(row: dict[str, Any]) -> str:
    """`record_hash` of a `record_row`, without copying and sorting it again (once per request
    on the hot path)."""
    return hashlib.sha256(orjson.dumps(row)).hexdigest()


def chain_engine(url: str) -> Engine:
    """The engine of appends; on SQLite the driver opens no transaction itself (each append
    issues BEGIN IMMEDIATE, taking the write lock before it reads the head)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_autocommit)
    return engine


def _sqlite_autocommit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None


def resolve_patients(connection: Connection, subjects: Iterable[Subject]) -> None:
    """Fill in each unresolved subject's PatientID and Issuer from the index (one query per
    500 studies); a study the index does not hold keeps (None, None)."""
    pending = [s for s in subjects if s.patient is None]
    uids = sorted({s.study for s in pending})
    found: dict[str, tuple[str | None, str | None]] = {}
    for start in range(0, len(uids), LOOKUP_CHUNK):
        statement = (
            select(STUDIES.c.study_instance_uid, PATIENTS.c.patient_id,
                   PATIENTS.c.issuer_of_patient_id)
            .select_from(STUDIES.join(PATIENTS,
                                      STUDIES.c.patient_key == PATIENTS.c.patient_key))
            .where(STUDIES.c.study_instance_uid.in_(uids[start:start + LOOKUP_CHUNK]))
        )
        for uid, patient_id, issuer in connection.execute(statement):
            found[uid] = (patient_id, issuer)
    for subject in pending:
        subject.patient = found.get(subject.study, (None, None))


def chained_one(head: tuple[int, str], event: AuditEvent
                ) -> tuple[tuple[Any, ...], tuple[int, str]]:
    """The row of `event` appended after `head`, and the new head."""
    seq = head[0] + 1
    record = record_row(seq, head[1], event)
    record["hash"] = digest = canonical_hash(record)
    return tuple(map(record.__getitem__, RECORD_COLUMNS)), (seq, digest)


def chained(head: tuple[int, str], events: Sequence[AuditEvent]
            ) -> tuple[list[tuple[Any, ...]], list[int], tuple[int, str]]:
    """The rows of `events` appended after `head`, their sequence numbers, the new head."""
    rows, numbers = [], []
    for item in events:
        row, head = chained_one(head, item)
        rows.append(row)
        numbers.append(head[0])
    return rows, numbers, head


class Busy(Exception):
    """The chain lock is held elsewhere, and this appender does not wait for it."""


class Appender:
    """Appends with the driver directly, on one kept connection (one thread at a time uses it):
    the statements never change, and building them through SQLAlchemy for every group would
    cost more than SQLite's commit itself. With `wait=False` (SQLite only) an append that
    would wait for the database's write lock raises Busy instead, at once."""

    def __init__(self, engine: Engine, wait: bool = True) -> None:
        self.engine = engine
        self.wait = wait
        self.raw: Any = None
        self.cursor: Any = None
        self.postgres = engine.dialect.name == "postgresql"
        self.mark = "%s" if self.postgres else "?"
        self.read_head = f"SELECT seq, hash, indexed_seq FROM {HEAD.name} WHERE id = {HEAD_ID}"
        self.create_head = (f"INSERT INTO {HEAD.name} (id, seq, hash, indexed_seq) "
                            f"VALUES ({HEAD_ID}, 0, '{GENESIS}', 0)")
        self.move_head = (f"UPDATE {HEAD.name} SET seq = {self.mark}, hash = {self.mark} "
                          f"WHERE id = {HEAD_ID}")
        self.move_head_from = f"{self.move_head} AND seq = {self.mark} AND hash = {self.mark}"
        #: (seq, hash) of the head this appender wrote last.
        self.last: tuple[int, str] | None = None
        self.insert_one = self.insert_statement(RECORDS.name, RECORD_COLUMNS, 1)

    def insert_statement(self, table: str, columns: Sequence[str], rows: int) -> str:
        names = ", ".join(f'"{name}"' for name in columns)
        one = f"({', '.join([self.mark] * len(columns))})"
        return f"INSERT INTO {table} ({names}) VALUES {', '.join([one] * rows)}"

    def insert(self, cursor: Any, table: str, columns: Sequence[str],
               rows: Sequence[tuple[Any, ...]]) -> None:
        """Multi-row INSERTs of at most INSERT_CHUNK rows (one round trip each)."""
        if len(rows) == 1 and table == RECORDS.name:
            cursor.execute(self.insert_one, rows[0])
            return
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start:start + INSERT_CHUNK]
            cursor.execute(self.insert_statement(table, columns, len(chunk)),
                           [value for row in chunk for value in row])

    def lookup(self, cursor: Any, uids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        found = {}
        for start in range(0, len(uids), LOOKUP_CHUNK):
            chunk = uids[start:start + LOOKUP_CHUNK]
            cursor.execute(
                "SELECT s.study_instance_uid, p.patient_id, p.issuer_of_patient_id "
                "FROM studies s JOIN patients p ON s.patient_key = p.patient_key "
                f"WHERE s.study_instance_uid IN ({', '.join([self.mark] * len(chunk))})", chunk)
            found.update((uid, (patient, issuer)) for uid, patient, issuer in cursor.fetchall())
        return found

    def connection(self) -> Any:
        if self.raw is not None:
            return self.raw
        raw = self.engine.raw_connection()
        cursor = raw.cursor()
        if self.postgres:
            # Committed means visible to every worker; like SQLite's WAL mode, a crash of the
            # database host (not of this server) may lose the last fraction of a second: the
            # price of not waiting for a disk flush on every request. Set once: the connection
            # is this appender's alone.
            cursor.execute("SET synchronous_commit = off")
            raw.commit()
        else:
            # Checkpoints run in the writer's idle time (`checkpoint`), not inside a request's
            # commit; and an appender that must not wait does not.
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            if not self.wait:
                cursor.execute("PRAGMA busy_timeout = 0")
        cursor.close()
        self.raw = raw
        return raw

    def transaction(self, work: Callable[[Any], Any]) -> Any:
        """`work(cursor)` in one transaction holding the chain lock."""
        raw = self.connection()
        cursor = raw.cursor()
        if not self.postgres:
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                cursor.close()
                if not self.wait and "locked" in str(exc):
                    raise Busy() from None  # nothing began: the connection stays usable
                self._discard()
                raise
        try:
            if self.postgres:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PG_CHAIN_LOCK,))
            result = work(cursor)
            if self.postgres:
                raw.commit()
            else:
                cursor.execute("COMMIT")
            cursor.close()
            return result
        except BaseException:
            self._discard()
            raise

    def kept_cursor(self) -> Any:
        """One sqlite3 cursor of the kept connection, used again by every lone append (making
        one, through the pool's proxy, costs as much as a statement)."""
        if self.cursor is None or self.raw is None:
            self.cursor = self.connection().driver_connection.cursor()
        return self.cursor

    def _discard(self) -> None:
        """A new connection next time: this one may be broken (its transaction rolls back)."""
        self.cursor = None
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.invalidate()

    def upgrade(self) -> None:
        """Drop the indexes audit_trail had in databases made by earlier versions (audit_search
        took their place; `index` fills it in for the records it misses)."""
        def work(cursor: Any) -> None:
            for name in tables.OBSOLETE_INDEXES:
                cursor.execute(f"DROP INDEX IF EXISTS {name}")

        self.transaction(work)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, and when it has grown past
        WAL_RESTART_FRAMES have the next writer start it again from its beginning (SQLite;
        no-op on PostgreSQL). A passive checkpoint alone is never complete while requests keep
        appending (each commit adds frames while it copies), so the WAL was never restarted
        under steady load and grew without bound (14 MB/s at 1,500 audited frames/s). The
        passive pass copies the bulk without blocking anyone; RESTART then copies what came
        meanwhile and waits at most RESTART_WAIT_MS for readers (writers wait for it: 2-11 ms
        here, so only when the WAL is that large; if readers stay, the next call tries again)."""
        if self.postgres:
            return
        cursor = self.connection().cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            (_, frames, _), = cursor.fetchall()
            if frames <= WAL_RESTART_FRAMES:
                return
            cursor.execute("PRAGMA busy_timeout")
            (waits,) = cursor.fetchone()
            cursor.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
            try:
                cursor.execute("PRAGMA wal_checkpoint(RESTART)")
                cursor.fetchall()
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(waits)}")
        finally:
            cursor.close()

    def head(self, cursor: Any) -> tuple[int, str, int]:
        cursor.execute(self.read_head)
        current = cursor.fetchone()
        if current is None:
            cursor.execute(self.create_head)
            return 0, GENESIS, 0
        return current

    def append(self, events: Sequence[AuditEvent],
               known: Callable[[Sequence[Subject]], list[str]],
               learned: Callable[[dict[str, tuple[str | None, str | None]]], None]
               ) -> list[int]:
        """Append `events` in one transaction; their sequence numbers. `known(subjects)`
        resolves what it can and returns the study UIDs left to look up in the index;
        `learned(found)` is told what the index answered."""
        subjects = [subject for item in events for subject in item.subjects]

        def work(cursor: Any) -> list[int]:
            missing = known(subjects)
            if missing:
                found = self.lookup(cursor, missing)
                learned(found)
                for subject in subjects:
                    if subject.patient is None:
                        subject.patient = found.get(subject.study, (None, None))
            # The head this connection wrote last is usually still the head: move it only if
            # so (one statement instead of reading it first); else read it and chain again.
            head = self.last
            if head is not None:
                rows, numbers, moved_to = chained(head, events)
                cursor.execute(self.move_head_from, (*moved_to, *head))
                if cursor.rowcount != 1:
                    head = None
            if head is None:
                seq, prev_hash, _ = self.head(cursor)
                rows, numbers, moved_to = chained((seq, prev_hash), events)
                cursor.execute(self.move_head, moved_to)
            self.insert(cursor, RECORDS.name, RECORD_COLUMNS, rows)
            return numbers, moved_to

        try:
            numbers, self.last = self.transaction(work)
        except BaseException:
            self.last = None
            raise
        return numbers

    def append_one(self, event: AuditEvent,
                   known: Callable[[Sequence[Subject]], list[str]]) -> int | None:
        """`append([event])` on the path of a lone request (SQLite), in one transaction of
        four statements: the record chained after the head this connection wrote last (its
        hash computed before the write lock is taken), or, if another writer (a worker, a
        host) has moved the head since, after the head read then, in the same transaction (it
        holds the lock: nobody moves it meanwhile). None when a patient must be looked up in
        the index first, or on PostgreSQL: use `append`. Raises Busy when the lock is held
        elsewhere and this appender does not wait."""
        if self.postgres or known(event.subjects):
            return None
        head = self.last
        staged = chained_one(head, event) if head is not None else None
        cursor = self.kept_cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not self.wait and "locked" in str(exc):
                raise Busy() from None
            self._discard()
            raise
        try:
            if staged is not None:
                cursor.execute(self.move_head_from, (*staged[1], *head))
                if cursor.rowcount != 1:
                    staged = None
            if staged is None:
                seq, prev_hash, _ = self.head(cursor)
                staged = chained_one((seq, prev_hash), event)
                cursor.execute(self.move_head, staged[1])
            row, moved_to = staged
            cursor.execute(self.insert_one, row)
            cursor.execute("COMMIT")
        except BaseException:
            self.last = None
            self._discard()  # its transaction rolls back with it
            raise
        self.last = moved_to
        return moved_to[0]

    def index(self) -> tuple[int, bool]:
        """Add records not indexed yet to audit_index (their studies) and audit_search (their
        user and time): at most INDEX_BATCH records and INDEX_ROWS study rows each, in one
        transaction, so B-tree pages are written once per batch, not once per request. The
        rows are made by the database from the records' JSON (SQLite's json_each,
        PostgreSQL's json_array_elements): nothing per row in Python, which would hold the GIL
        that requests wait for. Returns how many records it read, and whether it left some
        out (batch full)."""
        study_count, index_rows = (
            ("json_array_length(studies::json)", INDEX_FROM_JSON_POSTGRES) if self.postgres
            else ("json_array_length(studies)", INDEX_FROM_JSON_SQLITE))

        def work(cursor: Any) -> tuple[int, bool]:
            _, _, indexed = self.head(cursor)
            cursor.execute(f"SELECT seq, {study_count} FROM {RECORDS.name} "
                           f"WHERE seq > {self.mark} ORDER BY seq LIMIT {INDEX_BATCH}",
                           (indexed,))
            found = cursor.fetchall()
            rows, last = 0, indexed
            for seq, count in found:
                if rows >= INDEX_ROWS:
                    break
                rows, last = rows + count, seq
            if last != indexed:
                cursor.execute(index_rows.format(mark=self.mark), (indexed, last))
                cursor.execute(f"UPDATE {HEAD.name} SET indexed_seq = {self.mark} "
                               f"WHERE id = {HEAD_ID}", (last,))
            cursor.execute(f"INSERT INTO {PEOPLE.name} ({', '.join(PEOPLE_COLUMNS)}) "
                           f"SELECT {', '.join(PEOPLE_COLUMNS)} FROM {RECORDS.name} "
                           f"WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM {PEOPLE.name}) "
                           f"ORDER BY seq LIMIT {INDEX_BATCH}")
            people = cursor.rowcount
            full = len(found) == INDEX_BATCH or (bool(found) and last != found[-1][0]) \
                or people == INDEX_BATCH
            return max(len(found), people), full

        return self.transaction(work)

    def close(self) -> None:
        self.cursor = None
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        self.engine.dispose()
