"""RT content indexed in the same transaction as the instance (STOW and import alike).

The RT index rows are built where the instance is parsed (`ingest.parse_part`, in an ingest
worker process for STOW), as plain column → value rows: the server process then only inserts
them in the instance's index transaction, instead of reading and parsing the RT object again
(an RT structure set: ~40 ms of the server's CPU). An instance parsed elsewhere (bulk loads)
gets its rows built at index time, as before.

A malformed RT object is still stored: its parse problems become warnings (the STOW response's
WarningReason, and the `warnings` of the RT API), never a rejection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import Connection, Table
from sqlmodel import Session, SQLModel

from dicomweb.ingest import IngestedInstance
from dicomweb.rt._dicom import rt_kind_of
from dicomweb.rt.tables import delete_rt_rows, index_rt_instance
from dicomweb.store.statements import insert_keyed_rows

log = logging.getLogger(__name__)

# Values above this stay on disk (a deformable registration's vector grid can be 400 MB).
RT_DEFER_SIZE = 16 * 1024 * 1024

UNREADABLE = "RT content not indexed: the file cannot be read again"
UNPARSEABLE = ("RT content not indexed: its RT data cannot be parsed (the reason is in the "
               "server log)")


@dataclass
class RtIndexRows:
    """An RT instance's index rows, per table in the order they were made (their generated
    keys follow it, as from the ORM's flush), its warnings, and what to log when indexing."""

    rows: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log_message: str | None = None


class RowCollector:
    """Stands in for the Session `index_rt_instance` adds its row objects to: keeps them as
    plain rows (picklable, no ORM state)."""

    def __init__(self) -> None:
        self.by_table: dict[str, list[dict[str, Any]]] = {}

    def add(self, row: SQLModel) -> None:
        table: Table = row.__table__  # type: ignore[attr-defined]
        self.by_table.setdefault(table.name, []).append(
            {c.name: getattr(row, c.name) for c in table.columns
             if not (c.primary_key and c.autoincrement)})


def build_rt_rows(ingested: IngestedInstance) -> RtIndexRows | None:
    """The RT index rows of a parsed instance (None when it is not an RT object), read from
    its file as the server process did after storing it."""
    if rt_kind_of(ingested.sop_class_uid, ingested.series_row["modality"]) is None:
        return None
    path = ingested.file_path
    try:
        assert path is not None
        dataset = dcmread(Path(path), defer_size=RT_DEFER_SIZE)
    except Exception as exc:  # stored anyway; its RT content just cannot be read
        return RtIndexRows([], [UNREADABLE],
                           f"RT read of {ingested.sop_instance_uid} failed: {exc!r}")
    collector = RowCollector()
    try:
        warnings = index_rt_instance(collector, dataset)  # type: ignore[arg-type]
    except Exception as exc:  # indexed without RT rows
        return RtIndexRows([], [UNPARSEABLE],
                           f"RT parse of {ingested.sop_instance_uid} failed: {exc}")
    return RtIndexRows(list(collector.by_table.items()), list(warnings))


def attach_rt_rows(ingested: IngestedInstance) -> IngestedInstance:
    """`ingest.parse_part`'s last step: the rows go with the parsed instance."""
    ingested.rt_rows = build_rt_rows(ingested)
    return ingested


def index_hook(connection: Connection, ingested: IngestedInstance) -> list[str]:
    found = ingested.rt_rows if ingested.rt_rows is not None else build_rt_rows(ingested)
    if found is None:
        return []
    if found.log_message:
        log.warning("%s", found.log_message)
    for name, rows in found.rows:
        insert_keyed_rows(connection, SQLModel.metadata.tables[name], rows)
    return list(found.warnings)


def delete_hook(connection: Connection, sop_instance_uids: list[str]) -> None:
    session = Session(bind=connection)
    delete_rt_rows(session, sop_instance_uids)
    session.flush()
