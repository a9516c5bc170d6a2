"""The chain: what a request appends hashes exactly as `audit verify` checks; the search
index is filled in bounded batches."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from dicomweb.audit import chain
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.audit.trail import AuditTrail
from dicomweb.config import Settings
from dicomweb.store.repository import Store


def event(status: int = 200) -> AuditEvent:
    return AuditEvent(
        event_time="2026-12-02T04:00:00.000000Z", request_id="r1", action="read",
        operation="read", status=status, user_kind="oidc", who="alice", client_id="ohif",
        client_address="127.0.0.1", method="GET", path="/dicomweb/studies/1.2.3/metadata",
        query="includefield=all", subjects=[Subject("1.2.3", ["1.2.3.4"], [], ("P1", None))])


def test_record_row_is_its_own_canonical_form() -> None:
    """The hot path hashes `record_row` as it is: its keys must be the hashed columns, sorted
    (otherwise every appended record would fail verification)."""
    row = chain.record_row(7, "ab" * 32, event())
    assert list(row) == sorted(chain.HASHED_COLUMNS)
    assert chain.canonical_hash(row) == chain.record_hash(row)


def test_chained_records_link_and_verify_as_stored() -> None:
    rows, numbers, head = chain.chained((41, chain.GENESIS), [event(200), event(404)])
    assert numbers == [42, 43]
    first, second = (dict(zip(chain.RECORD_COLUMNS, row, strict=True)) for row in rows)
    assert first["prev_hash"] == chain.GENESIS and second["prev_hash"] == first["hash"]
    assert [chain.record_hash(first), chain.record_hash(second)] == [first["hash"],
                                                                     second["hash"]]
    assert head == (43, second["hash"])
    assert first["hash"] != chain.record_hash({**first, "status": 404})  # status is covered


def test_index_batches_are_bounded_by_study_rows(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A QIDO record names every study it found: a batch stops at INDEX_ROWS study rows (after
    a whole record), says so, and the next batches go on from there until all are indexed."""
    store = Store(Settings(data_dir=tmp_path))
    trail = AuditTrail(store)  # registers its tables before the schema is made
    store.create_schema()
    many = event()
    many.subjects = [Subject(f"1.2.{k}", [], [], ("P", None)) for k in range(3)]
    trail.append([many, many, many, many])  # 4 records, 12 study rows
    monkeypatch.setattr(chain, "INDEX_ROWS", 4)
    assert trail.appender.index() == (4, True)  # 2 records (6 rows) indexed, 2 left
    assert trail.appender.index() == (2, False)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM audit_index")).scalar() == 12
        assert connection.execute(text("SELECT indexed_seq FROM audit_chain")).scalar() == 4
    trail.close()
    store.close()


def test_the_wal_starts_again_while_requests_keep_appending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lone appends never stop while the writer thread checkpoints (as under steady load): the
    WAL must still be restarted, not grow by every record written (it grew 14 MB/s at 1,500
    audited frames/s when only passive checkpoints ran, and restarted only when idle)."""
    monkeypatch.setattr(chain, "WAL_RESTART_FRAMES", 64)  # 256 KiB, not 16 MiB: a short test
    store = Store(Settings(data_dir=tmp_path))
    trail = AuditTrail(store)
    store.create_schema()
    trail.append([event()])  # the lone path needs a head this process wrote
    wal = tmp_path / "index.sqlite-wal"
    appended, stop = [0], threading.Event()

    def keep_appending() -> None:  # about as often as requests of one client come
        while not stop.is_set():
            if trail.append_now(event()) is not None:
                appended[0] += 1
            time.sleep(0.0005)

    appending = threading.Thread(target=keep_appending)
    appending.start()
    largest = 0
    try:
        for _ in range(15):
            time.sleep(0.1)
            trail.appender.checkpoint()
            largest = max(largest, wal.stat().st_size)
    finally:
        stop.set()
        appending.join()
    written = appended[0] * 4096  # at least one WAL frame (a page) per committed record
    assert appended[0] > 300, appended[0]
    assert largest < written / 3, (largest, written)
    trail.close()
    store.close()


def test_workers_taking_turns_append_in_one_transaction_each(tmp_path: Path) -> None:
    """Two workers' lone appends on one database, taking turns: each finds the head moved by
    the other, and chains after it inside the transaction it began (it holds the write lock),
    not in a second one. The chain they wrote verifies, in one order."""
    store = Store(Settings(data_dir=tmp_path))
    trails = [AuditTrail(store), AuditTrail(store)]
    store.create_schema()
    begun: list[str] = []
    for trail in trails:
        trail.append([event()])  # each has written the head once
        raw = trail.now_appender.connection().driver_connection
        raw.set_trace_callback(lambda sql: begun.append(sql) if sql.startswith("BEGIN") else None)
    numbers = [trails[turn % 2].append_now(event()) for turn in range(10)]
    assert numbers == list(range(3, 13))
    assert len(begun) == 10
    verdict = trails[0].verify()
    assert verdict.intact and verdict.records == 12, verdict
    for trail in trails:
        trail.close()
    store.close()
