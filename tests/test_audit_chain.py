"""The chain's canonical form: what a request appends hashes exactly as `audit verify` checks."""

from __future__ import annotations

from dicomweb.audit import chain
from dicomweb.audit.events import AuditEvent, Subject


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
