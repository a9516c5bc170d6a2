"""C-STORE SCP (PS3.4 B.2): the dataset exactly as received, behind a File Meta header naming
its transfer syntax, goes through the same ingest and store as a STOW-RS part: the same
validation, duplicate policy, journaled blob-then-index commit and RT indexing.

pynetdicom writes the received dataset to a temp file on the blob filesystem as it arrives
(bounded memory); storing it is then a rename.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag

from dicomweb.access import WRITE, Principal, study_writer
from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    InstanceRejected,
)
from dicomweb.store.repository import Store, StoredInstance

log = logging.getLogger(__name__)

# PS3.4 Table B.2-1 (C-STORE statuses) and PS3.7 Annex C general statuses.
SUCCESS = 0x0000
WARNING_COERCION = 0xB000
NOT_AUTHORIZED = 0x0124
#: STOW failure reasons (PS3.18 Table 10.5.3-3, themselves C-STORE statuses) → C-STORE status.
STATUS_OF_REASON = {
    OUT_OF_RESOURCES: 0xA700,
    DATASET_DOES_NOT_MATCH_SOP_CLASS: 0xA900,
    CANNOT_UNDERSTAND: 0xC000,
    PROCESSING_FAILURE: 0x0110,
    DUPLICATE_SOP_INSTANCE: 0x0111,
}
SOP_CLASS_UID = Tag("SOPClassUID")
SOP_INSTANCE_UID = Tag("SOPInstanceUID")
#: ErrorComment (0000,0902) is LO: 64 characters at most.
COMMENT_LENGTH = 64


def status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:COMMENT_LENGTH]
    return ds


def store_received(
    store: Store, path: Path, sop_class: str, sop_instance: str, principal: Principal
) -> Dataset:
    """Store the received Part 10 file at `path` (consumed); the C-STORE response status."""
    if not principal.has(WRITE):
        path.unlink(missing_ok=True)
        log.warning("C-STORE from %s refused: no write scope", principal.subject)
        return status(NOT_AUTHORIZED, f"{principal.subject} may not store")
    mismatch = command_mismatch(path, sop_class, sop_instance)
    if mismatch:
        path.unlink(missing_ok=True)
        log.warning("C-STORE %s from %s rejected: %s", sop_instance, principal.subject, mismatch)
        return status(STATUS_OF_REASON[DATASET_DOES_NOT_MATCH_SOP_CLASS], mismatch)
    # The peer's labels go to the studies it stores; it adds only to studies it may see.
    outcome = store.store_files([path], writer=study_writer(principal, store.settings))[0]
    if isinstance(outcome, InstanceRejected):
        code = STATUS_OF_REASON.get(outcome.reason, 0xC000)
        log.warning("C-STORE %s from %s rejected (0x%04X): %s",
                    sop_instance, principal.subject, code, outcome.message)
        return status(code, outcome.message)
    return stored_status(outcome)


def stored_status(outcome: StoredInstance) -> Dataset:
    # STOW's mapping: stored with problems → Warning, B000 as its WarningReason.
    if outcome.warnings:
        return status(WARNING_COERCION, "; ".join(outcome.warnings))
    return status(SUCCESS)


def command_mismatch(path: Path, sop_class: str, sop_instance: str) -> str | None:
    """PS3.7 9.1.1.1: the command's Affected SOP Class and Instance UIDs are the dataset's.
    Reads the file only up to (0008,0018)."""

    def past_uids(tag: BaseTag, vr: str | None, length: int) -> bool:
        return tag > SOP_INSTANCE_UID

    try:
        with path.open("rb") as fp:
            head = read_partial(fp, stop_when=past_uids)
    except Exception as exc:  # damaged data: ingest says why, with its own status
        log.debug("dataset head unreadable (%s); ingest will report it", exc)
        return None
    found_class = str(head.get(SOP_CLASS_UID).value or "").strip() if SOP_CLASS_UID in head else ""
    found_instance = (
        str(head.get(SOP_INSTANCE_UID).value or "").strip() if SOP_INSTANCE_UID in head else ""
    )
    if found_class and found_class != sop_class:
        return f"SOP Class UID {found_class} is not the command's {sop_class}"
    if found_instance and found_instance != sop_instance:
        return f"SOP Instance UID {found_instance} is not the command's {sop_instance}"
    return None
