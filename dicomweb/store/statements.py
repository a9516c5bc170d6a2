"""The write path's statements, compiled once per dialect and run on the DBAPI cursor.

Core's `Connection.execute` costs ~40 µs a statement before the driver sees it (compiled
cache lookup, parameter processing per row, the result object), and a DIMSE C-STORE runs
six of them. These statements are SQLAlchemy's own compilation of the same Core INSERTs,
with the same column defaults and bind processors, executed in the Connection's transaction;
a driver error comes back as SQLAlchemy's exception (IntegrityError, OperationalError…) with
the driver's as `.orig`, as from `execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from dicomweb.store.tables import INSTANCES, PATIENTS, PENDING, SERIES, STUDIES

TABLES_BY_NAME = {t.name: t for t in (PATIENTS, STUDIES, SERIES, INSTANCES, PENDING)}
#: Per column: its name, its default (a value, or a callable of the execution context), whether
#: the default is a callable, and the dialect's bind processor (or None).
ColumnPlan = tuple[str, Any, bool, Callable[[Any], Any] | None]


def insert_ignoring_duplicates(dialect: str, table_name: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING (a Core statement): a row another instance or worker
    already made is left as it is."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = TABLES_BY_NAME[table_name]
    return insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))


class PreparedInsert:
    """An INSERT of whole rows of one table (column → value mappings, missing columns take
    their defaults), compiled for one dialect."""

    def __init__(self, statement: Any, table: Table, dialect: Dialect,
                 column_keys: list[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.positional = compiled.positional
        self.names = list(compiled.positiontup or compiled.binds)
        self.plan: list[ColumnPlan] = [_column_plan(table, name, dialect) for name in self.names]

    def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        generated: dict[str, Any] = {}  # one `utcnow()` per statement, as one transaction
        out: list[Any] = []
        for row in rows:
            values = []
            for name, default, call, process in self.plan:
                if name in row:
                    value = row[name]
                elif not call:
                    value = default
                elif name in generated:
                    value = generated[name]
                else:
                    value = generated[name] = default(None)
                values.append(process(value) if process is not None and value is not None
                              else value)
            out.append(values if self.positional else dict(zip(self.names, values, strict=True)))
        return out

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert `rows` in `connection`'s transaction (one executemany)."""
        if not rows:
            return
        run_on_cursor(connection, self.sql, self.parameters(rows), many=True)


def run_on_cursor(
    connection: Connection, sql: str, parameters: Any, *, many: bool = False
) -> list[Any]:
    """`sql` on a DBAPI cursor of `connection` (its transaction); the rows it returned."""
    cursor = connection.connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description is not None else []
    except connection.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            sql, None, exc, connection.dialect.loaded_dbapi.Error, dialect=connection.dialect
        ) from exc
    finally:
        cursor.close()


def _column_plan(table: Table, name: str, dialect: Dialect) -> ColumnPlan:
    column = table.c[name]
    default: Any = None
    call = False
    if column.default is not None:
        call = column.default.is_callable
        default = column.default.arg  # a callable takes the execution context (None here)
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return name, default, call, process


@lru_cache(maxsize=32)
def prepared_insert(dialect: Dialect, table_name: str, ignore_duplicates: bool) -> PreparedInsert:
    table = TABLES_BY_NAME[table_name]
    statement = (insert_ignoring_duplicates(dialect.name, table_name) if ignore_duplicates
                 else table.insert())
    return PreparedInsert(statement, table, dialect)


def insert_rows(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
    *, ignore_duplicates: bool = False,
) -> None:
    prepared_insert(connection.dialect, table.name, ignore_duplicates).execute(connection, rows)


@lru_cache(maxsize=64)
def prepared_keyed_insert(dialect: Dialect, table: Table) -> PreparedInsert:
    """An INSERT of every column but the table's generated integer key (RT index rows)."""
    names = [c.name for c in table.columns if not (c.primary_key and c.autoincrement)]
    # inline: no RETURNING of the key (an executemany fetches nothing back).
    return PreparedInsert(table.insert().inline(), table, dialect, column_keys=names)


def insert_keyed_rows(connection: Connection, table: Table,
                      rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of a table whose key the database generates, in order (so the keys follow it)."""
    prepared_keyed_insert(connection.dialect, table).execute(connection, rows)


@lru_cache(maxsize=8)
def _placeholder(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


def select_existing_sops(connection: Connection, uids: Sequence[str]) -> set[str]:
    """Those of `uids` (at most a few hundred) that name an indexed instance; every row is
    fetched (on SQLite the read ends with the statement)."""
    marks = ", ".join([_placeholder(connection.dialect)] * len(uids))
    sql = f"SELECT sop_instance_uid FROM instances WHERE sop_instance_uid IN ({marks})"
    return {uid for (uid,) in run_on_cursor(connection, sql, list(uids))}


def forget_pending(connection: Connection, keys: Sequence[str]) -> None:
    """Delete the journal rows of `keys` (at most a few hundred)."""
    marks = ", ".join([_placeholder(connection.dialect)] * len(keys))
    run_on_cursor(connection, f"DELETE FROM pending_blobs WHERE blob_key IN ({marks})",
                  list(keys))
