"""Storage Commitment Push Model SCP (PS3.4 Annex J): an N-ACTION asks whether the listed
instances are safely stored; the answer comes as an N-EVENT-REPORT, on the same association
while the requester keeps it open, else on a new one to the requester's configured address
(`DICOMWEB_DIMSE_DESTINATIONS`), proposing the SCP role (PS3.4 J.3.3).

An instance is committed once its C-STORE (or STOW) succeeded: blobs are fsynced and indexed
before that answer is given.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import build_context, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel

from dicomweb.access import WRITE, Principal
from dicomweb.attributes import Level
from dicomweb.dimse import reads
from dicomweb.dimse.peers import Destination
from dicomweb.qido import Condition, SearchQuery
from dicomweb.store.repository import Store

log = logging.getLogger(__name__)

#: PS3.4 J.3.1: the well-known SOP Instance of the Storage Commitment Push Model.
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 Table J.3-1)
EVENT_SUCCESS = 1  # Event Type IDs (PS3.4 Table J.3-2)
EVENT_FAILURES_EXIST = 2
# N-ACTION statuses (PS3.7 Annex C).
SUCCESS = 0x0000
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124
MISSING_ATTRIBUTE = 0x0120
# Failure Reasons (PS3.4 J.3.3.1).
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
UID_CHUNK = 500
#: A requester that releases at once does so within this; one that waits gets its report here.
RELEASE_GRACE_S = 0.5
#: How long a report on the requester's own association waits for its answer.
SAME_ASSOCIATION_TIMEOUT_S = 10


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)


def parse_request(action_type: int | None, instance_uid: str,
                  information: Dataset | None) -> CommitmentRequest | int:
    """The request, or the N-ACTION failure status it gets."""
    if action_type != REQUEST_STORAGE_COMMITMENT:
        return NO_SUCH_ACTION
    if str(instance_uid).strip() != WELL_KNOWN_INSTANCE:
        return INVALID_OBJECT_INSTANCE
    transaction = str(information.get("TransactionUID", "") if information else "").strip()
    items = information.get("ReferencedSOPSequence") if information else None
    if not transaction or not items:
        return MISSING_ATTRIBUTE
    references = []
    for item in items:
        sop_class = str(item.get("ReferencedSOPClassUID", "")).strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "")).strip()
        if not sop_class or not sop_instance:
            return MISSING_ATTRIBUTE
        references.append((sop_class, sop_instance))
    return CommitmentRequest(transaction, references)


def stored_classes(store: Store, principal: Principal, sops: list[str]) -> dict[str, str]:
    """SOP Instance UID → SOP Class UID of those stored (and visible), via QIDO's engine."""
    found: dict[str, str] = {}
    for start in range(0, len(sops), UID_CHUNK):
        chunk = sops[start : start + UID_CHUNK]
        query = SearchQuery(level=Level.INSTANCE, limit=len(chunk))
        query.conditions.append(Condition("SOPInstanceUID", ("00080018",), "\\".join(chunk)))
        for row in reads.search(store, query, principal).rows:
            sop = row.get("00080018", {}).get("Value", [""])[0]
            found[sop] = row.get("00080016", {}).get("Value", [""])[0]
    return found


def commitment_report(store: Store, principal: Principal, request: CommitmentRequest,
                      ae_title: str) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""
    stored = stored_classes(store, principal, [sop for _, sop in request.references])
    committed, failed = Sequence(), Sequence()
    for sop_class, sop in request.references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop
        if sop not in stored:
            item.FailureReason = NO_SUCH_OBJECT_INSTANCE
            failed.append(item)
        elif stored[sop] != sop_class:
            item.FailureReason = CLASS_INSTANCE_CONFLICT
            failed.append(item)
        else:
            committed.append(item)
    report = Dataset()
    report.TransactionUID = request.transaction_uid
    report.RetrieveAETitle = ae_title
    if committed:
        report.ReferencedSOPSequence = committed
    if failed:
        report.FailedSOPSequence = failed
    return (EVENT_FAILURES_EXIST if failed else EVENT_SUCCESS), report


class Commitments:
    """Handles N-ACTION (bound to EVT_N_ACTION) and delivers the reports."""

    def __init__(self, ae: ApplicationEntity, store: Store,
                 destinations: dict[str, Destination]) -> None:
        self.ae = ae
        self.store = store
        self.destinations = destinations

    def handle_action(self, event: evt.Event, principal: Principal) -> tuple[int, None]:
        if not principal.has(WRITE):
            return NOT_AUTHORIZED, None
        request = event.request
        try:
            information = event.action_information
        except Exception:  # undecodable Action Information
            information = None
        parsed = parse_request(request.ActionTypeID, request.RequestedSOPInstanceUID, information)
        if isinstance(parsed, int):
            log.warning("storage commitment from %s refused (0x%04X)", principal.subject, parsed)
            return parsed, None
        self.report_after_response(event.assoc, principal, parsed)
        return SUCCESS, None

    def report_after_response(self, assoc: Association, principal: Principal,
                              request: CommitmentRequest) -> None:
        """The N-EVENT-REPORT may only follow the N-ACTION response: start it once sent."""

        def on_sent(event: evt.Event) -> None:
            if isinstance(event.message, N_ACTION_RSP):
                assoc.unbind(evt.EVT_DIMSE_SENT, on_sent)
                threading.Thread(target=self.deliver, args=(assoc, principal, request),
                                 name="storage-commitment", daemon=True).start()

        assoc.bind(evt.EVT_DIMSE_SENT, on_sent)

    def deliver(self, assoc: Association, principal: Principal,
                request: CommitmentRequest) -> None:
        try:
            event_type, report = commitment_report(self.store, principal, request,
                                                   self.ae.ae_title)
        except Exception:
            log.exception("storage commitment %s: checking the instances failed",
                          request.transaction_uid)
            return
        if still_waiting(assoc) and send_report(assoc, event_type, report,
                                                SAME_ASSOCIATION_TIMEOUT_S):
            return
        destination = self.destinations.get(principal.subject)
        if destination is None:
            log.warning("storage commitment %s: %s released the association and has no "
                        "address in DICOMWEB_DIMSE_DESTINATIONS; report not sent",
                        request.transaction_uid, principal.subject)
            return
        from dicomweb.dimse.hooks import context_kwargs

        report_assoc = self.ae.associate(
            destination.host, destination.port,
            **context_kwargs(ae_title=destination.ae_title,
                             contexts=[build_context(StorageCommitmentPushModel)],
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)]),
        )
        if not report_assoc.is_established:
            log.warning("storage commitment %s: cannot associate with %s",
                        request.transaction_uid, destination.ae_title)
            return
        try:
            if not send_report(report_assoc, event_type, report):
                log.warning("storage commitment %s: %s did not accept the report",
                            request.transaction_uid, destination.ae_title)
        finally:
            report_assoc.release()


def still_waiting(assoc: Association) -> bool:
    """True if the requester keeps its association open (no A-RELEASE in the grace time):
    a report sent into a release would only wait for its timeout."""
    deadline = time.monotonic() + RELEASE_GRACE_S
    while time.monotonic() < deadline:
        if not assoc.is_established or isinstance(assoc.dul.peek_next_pdu(), A_RELEASE):
            return False
        time.sleep(0.05)
    return assoc.is_established


def send_report(assoc: Association, event_type: int, report: Dataset,
                timeout_s: float | None = None) -> bool:
    if timeout_s is not None:
        assoc.dimse_timeout = timeout_s
    try:
        status, _ = assoc.send_n_event_report(
            report, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
    except (RuntimeError, ValueError) as exc:
        log.info("N-EVENT-REPORT not sent on this association: %s", exc)
        return False
    return "Status" in status and status.Status == SUCCESS
