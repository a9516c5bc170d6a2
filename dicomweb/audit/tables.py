"""The audit trail's tables (SQLAlchemy Core, on their own MetaData: the store creates them
because the app factory registers them, not because the store knows them).

`audit_trail`: one row per audited request, in chain order (`seq` is gapless: each append
takes the chain lock, reads the head and writes head + 1, ...), holding everything the record
says, its studies and patients included, under its hash. It has no index but its key (each
would be one more B-tree page in every request's commit). `audit_index`: one row per study a
record names, for searching by patient and study; `audit_search`: one row per record, for
searching by user and time. Both are derived from the records in batches, so a record's own
write stays one row, and are not part of the chain. `audit_chain`: the last sequence number and
hash (so a truncated tail shows too) and how far audit_index has come (`indexed_seq`;
audit_search's own last `seq` says how far it has).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

UID = 64
HASH = 64  # hex SHA-256

#: SQLite: INTEGER PRIMARY KEY is the row id itself, one B-tree; BIGINT would add an index.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

records = Table(
    "audit_trail",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),
    #: ISO 8601 UTC with microseconds ("2025-01-31T12:00:00.000000Z"): sorts as text.
    Column("event_time", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    #: create | read | query | delete | update | denied
    Column("action", String(16), nullable=False),
    #: What was asked (create | read | query | delete | update), also for a denied request.
    Column("operation", String(16), nullable=False),
    Column("status", Integer, nullable=False),
    #: anonymous | oidc | apikey | share
    Column("user_kind", String(16), nullable=False),
    #: token `sub`, API key name, share id, or "anonymous"
    Column("who", String(256), nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("client_address", String(64), nullable=True),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    #: The query string with credentials removed.
    Column("query", Text, nullable=False),
    #: JSON list of {"study", "patient_id", "issuer", "series": [...], "instances": [...]}:
    #: the studies touched (for STOW the stored instances, for QIDO the studies found), with
    #: the patient as the index knew it.
    Column("studies", Text, nullable=False),
    Column("prev_hash", String(HASH), nullable=False),
    Column("hash", String(HASH), nullable=False),
)
#: Indexes of audit_trail in databases made before audit_search: dropped on first use.
OBSOLETE_INDEXES = ("ix_audit_trail_time", "ix_audit_trail_who")

index = Table(
    "audit_index",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("item", Integer, primary_key=True, autoincrement=False),
    Column("study_instance_uid", String(UID), nullable=False),
    Column("patient_id", Text, nullable=True),
    Index("ix_audit_index_study", "study_instance_uid"),
    Index("ix_audit_index_patient", "patient_id"),
)

people = Table(
    "audit_search",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),
    Column("event_time", String(32), nullable=False),
    Column("who", String(256), nullable=False),
    Column("client_id", String(256), nullable=True),
    Index("ix_audit_search_time", "event_time"),
    Index("ix_audit_search_who", "who"),
    Index("ix_audit_search_client", "client_id"),
)

head = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(HASH), nullable=False),
    #: Records up to this one are in audit_index.
    Column("indexed_seq", BigInteger, nullable=False, default=0),
)
