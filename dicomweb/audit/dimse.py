"""Audit records of DIMSE operations: the same trail, actions and resources as DICOMweb's.

Who is the calling AE title (`user_kind` "dimse"), the client address the peer's; `method` is
the DIMSE service (C-STORE, C-FIND, C-MOVE, C-GET, N-ACTION), `path` the SOP Class the request
named, `status` its DIMSE status (0 success, 0x0124 refused, ...). Each is recorded before its
response is sent (C-FIND: before the first match; C-MOVE / C-GET: before the first
sub-operation, PS3.15 A.5.3.3 Begin Transferring), with `AuditTrail.record_blocking` from
pynetdicom's handler threads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from dicomweb.access import Principal
from dicomweb.audit.events import AuditEvent, Subject, merge, stored_subjects, utc_timestamp
from dicomweb.audit.trail import AuditTrail
from dicomweb.audit.writer import AuditUnavailable

#: DIMSE statuses that mean "you may not" (PS3.4 C.4.1.1.4 / B.2.3 "Refused: Not Authorized").
DENIED_STATUSES = (0x0124,)


@dataclass(frozen=True)
class Peer:
    principal: Principal
    address: str | None


def dimse_event(peer: Peer, method: str, sop_class: str, operation: str, status: int,
                subjects: list[Subject], query: str = "", started_at: str | None = None
                ) -> AuditEvent:
    return AuditEvent(
        event_time=started_at or utc_timestamp(),
        request_id=uuid.uuid4().hex,
        action="denied" if status in DENIED_STATUSES else operation,
        operation=operation,
        status=status,
        user_kind=peer.principal.kind,
        who=peer.principal.subject,
        client_id=None,
        client_address=peer.address,
        method=method,
        path=sop_class,
        query=query,
        subjects=subjects,
    )


def instance_subjects(uids: Iterable[tuple[str, str, str]]) -> list[Subject]:
    """(study, series, SOP instance) triples, grouped by study."""
    return merge([], stored_subjects(list(uids)))


def study_subjects(studies: Iterable[str]) -> list[Subject]:
    return [Subject(uid) for uid in dict.fromkeys(studies)]


class DimseAudit:
    """Records DIMSE operations when the trail is on (`trail` None: it is off)."""

    def __init__(self, trail: AuditTrail | None) -> None:
        self.trail = trail

    def record(self, event: AuditEvent) -> bool:
        """Append `event`; False if the trail could not be written (refuse the operation)."""
        if self.trail is None:
            return True
        try:
            self.trail.record_blocking(event)
        except AuditUnavailable:
            return False
        return True

    def close(self) -> None:
        if self.trail is not None:
            self.trail.close()
