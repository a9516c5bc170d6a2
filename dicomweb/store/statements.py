"""Index inserts shared by the batch and the one-by-one paths."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from dicomweb.store.tables import INSTANCES, PATIENTS, SERIES, STUDIES


@lru_cache(maxsize=16)
def insert_ignoring_duplicates(dialect: str, table_name: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, built once per table: a row another instance or
    worker already made is left as it is."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = TABLES_BY_NAME[table_name]
    return insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))


TABLES_BY_NAME = {t.name: t for t in (PATIENTS, STUDIES, SERIES, INSTANCES)}
INSTANCE_INSERT = INSTANCES.insert()
