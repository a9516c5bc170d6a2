"""The hash chain: appending records in one serialized order, and checking it.

Each record's hash is SHA-256 over its canonical content (every column but `hash`, its
subjects in order, and `prev_hash`, the hash of the record before it). Appends from every
worker and host take one lock first (PostgreSQL: a transaction-scoped advisory lock; SQLite:
BEGIN IMMEDIATE, the database's write lock), read the head, and write gapless sequence numbers,
so the chain has one order. Changing, inserting or deleting a row afterwards breaks it where the
change was made, and `verify` names that record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, event, select, text

from dicomweb.audit import tables
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.store.database import make_engine
from dicomweb.store.tables import Patient, Study

GENESIS = "0" * 64
HEAD_ID = 1
#: Any 64-bit constant other than the schema lock's: held while one transaction appends.
PG_CHAIN_LOCK = 0x41554454
RECORDS, SUBJECTS, HEAD = tables.records, tables.subjects, tables.head
STUDIES, PATIENTS = Study.__table__, Patient.__table__  # type: ignore[attr-defined]
#: Columns of a record covered by its hash (all but `hash`).
HASHED_COLUMNS = tuple(str(c.name) for c in RECORDS.columns if c.name != "hash")
SUBJECT_COLUMNS = ("study_instance_uid", "patient_id", "issuer_of_patient_id",
                   "series_instance_uids", "sop_instance_uids")
LOOKUP_CHUNK = 500


def record_hash(record: dict[str, Any], subjects: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of the canonical form: sorted keys, subjects in their stored order."""
    body = {name: record[name] for name in HASHED_COLUMNS}
    body["subjects"] = [[subject[name] for name in SUBJECT_COLUMNS] for subject in subjects]
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chain_engine(url: str) -> Engine:
    """An engine whose transactions hold the chain lock from their first statement."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        # pysqlite would open a deferred transaction at the first write, after our read of the
        # head; take over BEGIN and make it IMMEDIATE (the SQLAlchemy pysqlite recipe).
        event.listen(engine, "connect", _sqlite_autocommit)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_autocommit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def lock_chain(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_CHAIN_LOCK})


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


def subject_rows(seq: int, subjects: Sequence[Subject]) -> list[dict[str, Any]]:
    rows = []
    for item, subject in enumerate(subjects):
        patient_id, issuer = subject.patient or (None, None)
        rows.append({
            "seq": seq, "item": item, "study_instance_uid": subject.study,
            "patient_id": patient_id, "issuer_of_patient_id": issuer,
            "series_instance_uids": orjson.dumps(subject.series).decode(),
            "sop_instance_uids": orjson.dumps(subject.instances).decode(),
        })
    return rows


def record_row(seq: int, prev_hash: str, event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": seq, "event_time": event.event_time, "request_id": event.request_id,
        "action": event.action, "operation": event.operation, "status": event.status,
        "user_kind": event.user_kind, "who": event.who, "client_id": event.client_id,
        "client_address": event.client_address, "method": event.method, "path": event.path,
        "query": event.query, "prev_hash": prev_hash,
    }


def append(engine: Engine, events: Sequence[AuditEvent]) -> list[int]:
    """Append `events` (subjects already resolved) in one transaction; their sequence numbers."""
    with engine.begin() as connection:
        lock_chain(connection)
        current = connection.execute(
            select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)).first()
        if current is None:
            connection.execute(HEAD.insert().values(id=HEAD_ID, seq=0, hash=GENESIS))
            seq, prev_hash = 0, GENESIS
        else:
            seq, prev_hash = current
        records, subjects, numbers = [], [], []
        for item in events:
            seq += 1
            record = record_row(seq, prev_hash, item)
            rows = subject_rows(seq, item.subjects)
            record["hash"] = prev_hash = record_hash(record, rows)
            records.append(record)
            subjects.extend(rows)
            numbers.append(seq)
        connection.execute(RECORDS.insert(), records)
        if subjects:
            connection.execute(SUBJECTS.insert(), subjects)
        connection.execute(
            HEAD.update().where(HEAD.c.id == HEAD_ID).values(seq=seq, hash=prev_hash))
    return numbers


# --- verification ------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """The chain is intact (`problem` None), or the first place where it is not."""

    records: int
    head_seq: int
    head_hash: str
    problem: str | None = None
    seq: int | None = None  # the record named by `problem`

    @property
    def intact(self) -> bool:
        return self.problem is None


def _records_with_subjects(engine: Engine) -> Iterator[tuple[dict[str, Any], list[dict]]]:
    """Every record in chain order with its subjects, streamed (two cursors walked together)."""
    with engine.connect() as records_connection, engine.connect() as subjects_connection:
        records = records_connection.execution_options(stream_results=True, yield_per=2000)
        subjects = subjects_connection.execution_options(stream_results=True, yield_per=2000)
        record_rows = records.execute(select(RECORDS).order_by(RECORDS.c.seq)).mappings()
        subject_iter = iter(subjects.execute(
            select(SUBJECTS).order_by(SUBJECTS.c.seq, SUBJECTS.c.item)).mappings())
        pending = next(subject_iter, None)
        for record in record_rows:
            mine = []
            while pending is not None and pending["seq"] <= record["seq"]:
                if pending["seq"] == record["seq"]:
                    mine.append(dict(pending))
                pending = next(subject_iter, None)
            yield dict(record), mine


def verify(engine: Engine) -> Verdict:
    """Walk the chain from the first record; name the first altered, inserted or missing one."""
    with engine.connect() as connection:
        head = connection.execute(
            select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)).first()
    head_seq, head_hash = head if head is not None else (0, GENESIS)
    count, prev_seq, prev_hash = 0, 0, GENESIS

    def broken(problem: str, seq: int) -> Verdict:
        return Verdict(count, head_seq, head_hash, problem, seq)

    for record, subjects in _records_with_subjects(engine):
        seq = record["seq"]
        if head is None:
            return broken("the chain head (table audit_head) was deleted", seq)
        if seq > head_seq:
            return broken(f"record {seq} was inserted: the last record written is "
                          f"{head_seq}", seq)
        if seq != prev_seq + 1:
            return broken(f"{_span(prev_seq + 1, seq - 1)} missing (deleted): the chain goes "
                          f"from record {prev_seq} to record {seq}", prev_seq + 1)
        if record_hash(record, subjects) != record["hash"]:
            return broken(f"record {seq} was altered: its content does not match its hash", seq)
        if record["prev_hash"] != prev_hash:
            return broken(f"record {seq} does not follow record {prev_seq}: record {seq} was "
                          f"inserted, or record {prev_seq} was replaced", seq)
        count, prev_seq, prev_hash = count + 1, seq, record["hash"]
    if prev_seq < head_seq:
        return broken(f"{_span(prev_seq + 1, head_seq)} missing (deleted): the last record "
                      f"written is {head_seq}", prev_seq + 1)
    if prev_hash != head_hash:
        return broken(f"record {prev_seq} was replaced: its hash is not the one written last",
                      prev_seq)
    return Verdict(count, head_seq, head_hash)


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first} to {last} are"
