"""RT content indexed in the same transaction as the instance (STOW and import alike).

A malformed RT object is still stored: its parse problems become warnings (the STOW response's
WarningReason, and the `warnings` of the RT API), never a rejection.
"""

from __future__ import annotations

import logging

from pydicom import dcmread
from sqlalchemy import Connection
from sqlmodel import Session

from dicomweb.ingest import IngestedInstance
from dicomweb.rt.tables import delete_rt_rows, index_rt_instance, rt_kind_of

log = logging.getLogger(__name__)

# Values above this stay on disk (a deformable registration's vector grid can be 400 MB).
RT_DEFER_SIZE = 16 * 1024 * 1024


def index_hook(connection: Connection, ingested: IngestedInstance) -> list[str]:
    # From the values ingest already has: asking the dataset again converts its elements.
    if rt_kind_of(ingested.sop_class_uid, ingested.series_row["modality"]) is None:
        return []
    try:
        dataset = dcmread(ingested.file_path, defer_size=RT_DEFER_SIZE)
    except Exception as exc:  # stored already; its RT content just cannot be read
        log.warning("RT read of %s failed: %r", ingested.sop_instance_uid, exc)
        return ["RT content not indexed: the file cannot be read again"]
    session = Session(bind=connection)
    try:
        warnings = index_rt_instance(session, dataset)
    except Exception as exc:
        session.expunge_all()  # nothing was flushed: the instance is indexed without RT rows
        log.warning("RT parse of %s failed: %s", ingested.sop_instance_uid, exc)
        return ["RT content not indexed: its RT data cannot be parsed (the reason is in the "
                "server log)"]
    session.flush()
    return warnings


def delete_hook(connection: Connection, sop_instance_uids: list[str]) -> None:
    session = Session(bind=connection)
    delete_rt_rows(session, sop_instance_uids)
    session.flush()
