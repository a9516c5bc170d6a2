"""Checking the hash chain: walk it from the first record and name the first altered,
inserted or missing one (`dicomweb audit verify`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from dicomweb.audit.chain import GENESIS, HEAD, HEAD_ID, RECORDS, record_hash


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


def verify(engine: Engine) -> Verdict:
    """Walk the chain from the first record; name the first altered, inserted or missing one."""
    with engine.connect() as connection:
        head = connection.execute(
            select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)).first()
        head_seq, head_hash = head if head is not None else (0, GENESIS)
        count, prev_seq, prev_hash = 0, 0, GENESIS

        def broken(problem: str, seq: int) -> Verdict:
            return Verdict(count, head_seq, head_hash, problem, seq)

        rows = connection.execution_options(stream_results=True, yield_per=2000).execute(
            select(RECORDS).order_by(RECORDS.c.seq)).mappings()
        for record in rows:
            seq = record["seq"]
            if head is None:
                return broken("the chain head (table audit_chain) was deleted", seq)
            if seq > head_seq:
                return broken(f"record {seq} was inserted: the last record written is "
                              f"{head_seq}", seq)
            if seq != prev_seq + 1:
                return broken(f"{_span(prev_seq + 1, seq - 1)} missing (deleted): the chain "
                              f"goes from record {prev_seq} to record {seq}", prev_seq + 1)
            if record_hash(dict(record)) != record["hash"]:
                return broken(f"record {seq} was altered: its content does not match its hash",
                              seq)
            if record["prev_hash"] != prev_hash:
                return broken(f"record {seq} does not follow record {prev_seq}: record {seq} "
                              f"was inserted, or record {prev_seq} was replaced", seq)
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
