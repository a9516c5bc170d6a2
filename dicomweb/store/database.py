"""Engine creation and schema set-up for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import URL, Engine, MetaData, event, make_url, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import SQLModel, create_engine

from dicomweb.rt import tables as rt_tables  # noqa: F401  (RT index tables, beside the hierarchy)
from dicomweb.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

log = logging.getLogger(__name__)

#: Bumped when a change needs more than new tables (create_all adds missing tables itself).
SCHEMA_VERSION = 1
# Any 64-bit constant: held while one process creates or migrates the schema.
PG_SCHEMA_LOCK = 0x44494357


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of an SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str) -> Engine:
    """An engine; it connects (and SQLite creates its file) only when first used."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=8
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = connection.cursor()
    # WAL lets readers go on while one writer commits; several workers share the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    # PS3.4 C.2.2.2.4: wildcard matching is case-sensitive; SQLite's LIKE is not by default.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_schema(engine: Engine, extensions: Sequence[MetaData] = ()) -> None:
    """Create missing tables (the index's and those extensions registered; SQLite's folder
    first); safe to call from several processes at once."""
    if (database_file := sqlite_file(engine.url)) is not None:
        database_file.parent.mkdir(parents=True, exist_ok=True)
    every = (SQLModel.metadata, *extensions)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_SCHEMA_LOCK})
            _create_all(connection, every)
        return
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                _create_all(connection, every)
            return
        except (OperationalError, ProgrammingError) as exc:  # another process won the race
            log.info("schema creation retry %d: %s", attempt + 1, exc)
    for metadata in every:
        metadata.create_all(engine)


def _create_all(connection, every: Sequence[MetaData]) -> None:  # type: ignore[no-untyped-def]
    for metadata in every:
        metadata.create_all(connection)
        _create_missing_indexes(connection, metadata)
    _record_version(connection)


def _create_missing_indexes(connection, metadata: MetaData) -> None:  # type: ignore[no-untyped-def]
    """create_all makes indexes only with new tables; add those a newer version defines."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)


def _record_version(connection) -> None:  # type: ignore[no-untyped-def]
    connection.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    current = connection.execute(text("SELECT max(version) FROM schema_version")).scalar()
    if current is None or current < SCHEMA_VERSION:
        connection.execute(text("INSERT INTO schema_version VALUES (:v)"), {"v": SCHEMA_VERSION})
