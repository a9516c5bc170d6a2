"""C-STORE SCP (PS3.4 B.2): the dataset exactly as received, behind a File Meta header naming
its transfer syntax, goes through the same ingest and store as a STOW-RS part: the same
validation, duplicate policy, journaled blob-then-index commit and RT indexing.

pynetdicom writes the received dataset to a temp file on the blob filesystem as it arrives
(bounded memory); storing it is then a rename. The C-STOREs of all associations go through one
`StoreQueue`: what arrives while a batch is being stored is stored together, as a STOW
request's parts are (one journal and one index transaction, writeback of all at once), so
concurrent associations share the cost of a commit instead of queueing on the index lock.
"""

from __future__ import annotations

import logging
import struct
import threading
from concurrent.futures import Future
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag

from dicomweb import metrics
from dicomweb.access import WRITE, Principal, study_writer
from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    InstanceRejected,
)
from dicomweb.store.access import StudyWriter
from dicomweb.store.repository import Store, StoredInstance, rejection_for

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


#: Instances stored in one batch at most (STOW's batch size).
BATCH_SIZE = 32
Outcome = StoredInstance | InstanceRejected


class StoreQueue:
    """Received files of every association, stored in batches without a thread of its own:
    the association that finds no batch being stored stores one (its own file, and whatever
    others queue meanwhile); the others wait for their file's outcome. One association alone
    stores in its own thread, with no hand-off to wait for on a busy machine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.pending: list[tuple[Path, StudyWriter, Future[Outcome]]] = []
        self.storing = False

    def store_file(self, path: Path, writer: StudyWriter) -> Outcome:
        """Store one received file (consumed); returns once its batch is stored."""
        done: Future[Outcome] = Future()
        with self.lock:
            self.pending.append((path, writer, done))
            lead = not self.storing
            self.storing = True
        if lead:
            self.store_pending()
        return done.result()

    def store_pending(self) -> None:
        while True:
            with self.lock:
                batch, self.pending = self.pending[:BATCH_SIZE], self.pending[BATCH_SIZE:]
                if not batch:
                    self.storing = False
                    return
            log.debug("storing a batch of %d", len(batch))
            for writer in {writer for _, writer, _ in batch}:  # one store call per writer
                self.store_batch([(p, f) for p, w, f in batch if w == writer], writer)

    def store_batch(self, items: list[tuple[Path, Future[Outcome]]], writer: StudyWriter) -> None:
        try:
            outcomes = self.store.store_files([path for path, _ in items], writer=writer)
        except Exception as exc:  # the batch failed as a whole: each says why
            outcomes = [rejection_for(exc)] * len(items)
        for (_, done), outcome in zip(items, outcomes, strict=True):
            done.set_result(outcome)


def store_received(
    store: StoreQueue, path: Path, sop_class: str, sop_instance: str, principal: Principal,
    outcomes: list[Outcome] | None = None,
) -> Dataset | int:
    """Store the received Part 10 file at `path` (consumed); the C-STORE response status.
    The store's outcome, if any, is appended to `outcomes` (for the audit trail)."""
    if not principal.has(WRITE):
        path.unlink(missing_ok=True)
        log.warning("C-STORE from %s refused: no write scope", principal.subject)
        return status(NOT_AUTHORIZED, f"{principal.subject} may not store")
    mismatch = command_mismatch(path, sop_class, sop_instance)
    if mismatch:
        path.unlink(missing_ok=True)
        log.warning("C-STORE %s from %s rejected: %s", sop_instance, principal.subject, mismatch)
        return status(STATUS_OF_REASON[DATASET_DOES_NOT_MATCH_SOP_CLASS], mismatch)
    size = path.stat().st_size
    # The peer's labels go to the studies it stores; it adds only to studies it may see.
    outcome = store.store_file(path, study_writer(principal, store.store.settings))
    if outcomes is not None:
        outcomes.append(outcome)
    if isinstance(outcome, InstanceRejected):
        metrics.record_store_outcome(None, size, outcome.reason)
        code = STATUS_OF_REASON.get(outcome.reason, 0xC000)
        log.warning("C-STORE %s from %s rejected (0x%04X): %s",
                    sop_instance, principal.subject, code, outcome.message)
        return status(code, outcome.message)
    metrics.record_store_outcome(outcome.outcome, size)
    return stored_status(outcome)


def receive_failed(error: OSError) -> Dataset:
    """The status of a dataset that could not be written as it arrived (STOW's mapping of
    the same error: out of disk space is A700)."""
    rejection = rejection_for(error)
    code = STATUS_OF_REASON.get(rejection.reason, 0xC000)
    metrics.record_store_outcome(None, 0, rejection.reason)
    log.warning("C-STORE not received (0x%04X): %s", code, rejection.message)
    return status(code, rejection.message)


def stored_status(outcome: StoredInstance) -> Dataset | int:
    # STOW's mapping: stored with problems → Warning, B000 as its WarningReason.
    if outcome.warnings:
        return status(WARNING_COERCION, "; ".join(outcome.warnings))
    return SUCCESS  # a bare status code: pynetdicom needs no Dataset for it


def command_mismatch(path: Path, sop_class: str, sop_instance: str) -> str | None:
    """PS3.7 9.1.1.1: the command's Affected SOP Class and Instance UIDs are the dataset's."""
    found = leading_uids(path)
    if found is None:
        found = parsed_uids(path)
    if found is None:
        return None  # damaged data: ingest says why, with its own status
    found_class, found_instance = found
    if found_class and found_class != sop_class:
        return f"SOP Class UID {found_class} is not the command's {sop_class}"
    if found_instance and found_instance != sop_instance:
        return f"SOP Instance UID {found_instance} is not the command's {sop_instance}"
    return None


LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                   b"UT"}
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
HEAD_BYTES = 4096


def leading_uids(path: Path) -> tuple[str, str] | None:
    """(SOP Class UID, SOP Instance UID) read from the first elements of a little endian data
    set (PS3.5 7.1), without pydicom; None when the head cannot be read that way."""
    with path.open("rb") as fp:
        head = fp.read(HEAD_BYTES)
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    meta_end = 144 + struct.unpack_from("<I", head, 140)[0]
    syntax = meta_transfer_syntax(head[:meta_end])
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return None
    implicit = syntax == IMPLICIT_LE
    values: dict[int, str] = {}
    position = meta_end
    while position + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, position)
        tag = group << 16 | element
        if tag > int(SOP_INSTANCE_UID):
            break
        if implicit:
            (length,) = struct.unpack_from("<I", head, position + 4)
            position += 8
        elif head[position + 4 : position + 6] in LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", head, position + 8)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", head, position + 6)
            position += 8
        if length == 0xFFFFFFFF or position + length > len(head):
            return None
        values[tag] = head[position : position + length].decode("latin-1").strip(" \0")
        position += length
    if int(SOP_INSTANCE_UID) not in values:
        return None
    return values.get(int(SOP_CLASS_UID), ""), values[int(SOP_INSTANCE_UID)]


def meta_transfer_syntax(meta: bytes) -> str | None:
    """(0002,0010) of a File Meta group (always explicit VR little endian, PS3.10 7.1)."""
    position = 132
    while position + 8 <= len(meta):
        group, element = struct.unpack_from("<HH", meta, position)
        if meta[position + 4 : position + 6] in LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", meta, position + 8)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", meta, position + 6)
            position += 8
        if (group, element) == (0x0002, 0x0010):
            return meta[position : position + length].decode("latin-1").strip(" \0")
        position += length
    return None


def parsed_uids(path: Path) -> tuple[str, str] | None:
    """The same with pydicom (other transfer syntaxes), reading up to (0008,0018)."""

    def past_uids(tag: BaseTag, vr: str | None, length: int) -> bool:
        # pydicom reads an undefined-length value (a sequence) whole, before any limit of
        # ingest has looked at it: stop there, ingest judges the data set.
        return tag > SOP_INSTANCE_UID or length == 0xFFFFFFFF

    try:
        with path.open("rb") as fp:
            head = read_partial(fp, stop_when=past_uids)
    except Exception as exc:
        log.debug("dataset head unreadable (%s); ingest will report it", exc)
        return None

    def text(tag: BaseTag) -> str:
        return str(head[tag].value or "").strip() if tag in head else ""

    return text(SOP_CLASS_UID), text(SOP_INSTANCE_UID)
