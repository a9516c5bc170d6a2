"""The DIMSE service: one pynetdicom Application Entity listening beside DICOMweb, its
presentation contexts, and the event handlers that route each service to the store.

Verification (C-ECHO), Storage (C-STORE, every SOP Class in pydicom's dictionary, any transfer
syntax), Query/Retrieve (Patient Root and Study Root C-FIND, C-MOVE, C-GET) and Storage
Commitment Push Model (N-ACTION / N-EVENT-REPORT), all as SCP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    uid_to_service_class,
)
from pynetdicom.transport import ThreadedAssociationServer

from dicomweb.access import READ, Principal
from dicomweb.audit.dimse import DimseAudit, Peer, dimse_event, instance_subjects, study_subjects
from dicomweb.audit.events import utc_timestamp
from dicomweb.config import Settings
from dicomweb.dimse import find, hooks, reads, retrieve, storage
from dicomweb.dimse.commitment import Commitments
from dicomweb.dimse.peers import PeerTable, parse_destinations, parse_peers
from dicomweb.errors import BadRequest
from dicomweb.pixels.budget import MemoryBudget
from dicomweb.pixels.frames import PixelLimits
from dicomweb.store.repository import Store, StoredInstance

log = logging.getLogger(__name__)

QUERY_RETRIEVE_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
#: Largest PDU we accept (PS3.8 D.1): fewer, larger PDUs cost pynetdicom less per dataset.
MAX_PDU_SIZE = 1 << 20
MAX_ASSOCIATIONS = 16
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Out of Resources (PS3.4 B.2.3 A7xx, C.4 A700): the operation is refused when its audit
#: record cannot be written, as DICOMweb answers 503.
AUDIT_UNAVAILABLE = 0xA700
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED = 0x01, 0x01, 0x03


class DimseService:
    def __init__(self, settings: Settings, store: Store, audit: DimseAudit | None = None
                 ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit or DimseAudit(None)
        self.peers = PeerTable(parse_peers(settings.dimse_peers))
        self.destinations = parse_destinations(settings.dimse_destinations)
        hooks.install(store.blobs.tmp_dir)
        self.ae = build_ae(settings.ae_title)
        self.commitments = Commitments(self.ae, store, self.destinations)
        self.storing = storage.StoreQueue(store)
        # Transcodes for C-GET/C-MOVE: WADO's limits, and this process's own share of the pixel
        # memory (as one HTTP worker's).
        self.limits = PixelLimits(settings.max_decoded_bytes, MemoryBudget(
            settings.pixel_memory_bytes // max(settings.workers, 1), settings.pixel_wait_seconds))
        self.server: ThreadedAssociationServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in background threads; OSError when the port cannot be bound."""
        removed = hooks.sweep_received(self.store.blobs.tmp_dir)
        if removed:
            log.warning("removed %d dataset(s) left half-received by a crash", removed)
        assert self.settings.dimse_port is not None
        self.server = self.ae.start_server(
            (self.settings.host, self.settings.dimse_port), block=False,
            evt_handlers=self.handlers(),
        )

    def stop_listening(self) -> None:
        """No new associations; those in progress go on."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def close(self) -> None:
        """Abort what is still running."""
        self.stop_listening()
        self.ae.shutdown()
        self.audit.close()

    def handlers(self) -> list[Any]:
        return [
            hooks.NODELAY_HANDLER,
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self.on_c_store),
            (evt.EVT_C_FIND, self.on_c_find),
            (evt.EVT_C_MOVE, self.on_c_move),
            (evt.EVT_C_GET, self.on_c_get),
            (evt.EVT_N_ACTION, self.on_n_action),
        ]

    # --- association --------------------------------------------------------------------

    def principal(self, event: evt.Event) -> Principal | None:
        return self.peers.principal(calling_ae_title(event.assoc), event.assoc.requestor.address)

    def on_requested(self, event: evt.Event) -> None:
        """PS3.8 7.1.1.7: an AE title not in DICOMWEB_DIMSE_PEERS is rejected."""
        if self.principal(event) is None:
            log.warning("association from %s at %s rejected: not in DICOMWEB_DIMSE_PEERS",
                        calling_ae_title(event.assoc), event.assoc.requestor.address)
            event.assoc.acse.send_reject(
                REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED
            )
            event.assoc.kill()  # as pynetdicom's own rejections: the A-ASSOCIATE-RJ goes first
            return
        requestor = event.assoc.requestor
        receiving = {uid for uid, role in requestor.role_selection.items() if role.scp_role}
        if receiving:
            retrieve.prefer_sendable_syntaxes(
                requestor.primitive.presentation_context_definition_list, receiving
            )

    def on_established(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        log.info("association from %s at %s:%s", requestor.ae_title, requestor.address,
                 requestor.port)

    def allowed(self, event: evt.Event) -> Principal:
        principal = self.principal(event)
        assert principal is not None  # the association was accepted for it
        return principal

    def recorded(self, event: evt.Event, principal: Principal, operation: str, status: int,
                 subjects: list[Any], query: str = "", started_at: str | None = None) -> bool:
        """Record the operation in the audit trail; False if it could not be written."""
        peer = Peer(principal, event.assoc.requestor.address)
        method = type(event.request).__name__.replace("_", "-")  # C_STORE → C-STORE
        sop_class = str(getattr(event.request, "AffectedSOPClassUID", "")
                        or getattr(event.request, "RequestedSOPClassUID", ""))
        return self.audit.record(dimse_event(peer, method, sop_class, operation, status,
                                             subjects, query, started_at))

    # --- services -----------------------------------------------------------------------

    def on_c_store(self, event: evt.Event) -> Any:
        request = event.request
        sop_class = str(request.AffectedSOPClassUID)
        path = Path(event.dataset_path)
        if uid_to_service_class(sop_class) is not StorageServiceClass:
            path.unlink(missing_ok=True)
            log.warning("C-STORE of unknown SOP Class %s refused", sop_class)
            return storage.status(SOP_CLASS_NOT_SUPPORTED, f"{sop_class} is not a storage class")
        failure = hooks.receive_error(request)
        if failure is not None:
            path.unlink(missing_ok=True)
            refusal = storage.receive_failed(failure)
            # Recorded like every other failed C-STORE; it is a failure whatever the trail says.
            self.recorded(event, self.allowed(event), "create", int(refusal.Status), [])
            return refusal
        principal, outcomes = self.allowed(event), []
        answer = storage.store_received(self.storing, path, sop_class,
                                        str(request.AffectedSOPInstanceUID), principal, outcomes)
        stored = [(o.study_instance_uid, o.series_instance_uid, o.sop_instance_uid)
                  for o in outcomes if isinstance(o, StoredInstance)]
        code = answer if isinstance(answer, int) else int(answer.Status)
        if not self.recorded(event, principal, "create", code, instance_subjects(stored)):
            return storage.status(AUDIT_UNAVAILABLE, "the audit trail cannot be written")
        return answer

    def on_c_find(self, event: evt.Event) -> Iterator[tuple[Any, Any]]:
        principal, started_at = self.allowed(event), utc_timestamp()
        if not principal.has(READ):
            self.recorded(event, principal, "query", retrieve.NOT_AUTHORIZED, [])
            refusal = storage.status(retrieve.NOT_AUTHORIZED, f"{principal.subject} may not query")
            yield refusal, None
            return
        root = find.ROOT_OF_MODEL[str(event.request.AffectedSOPClassUID)]
        try:
            request = find.parse_identifier(event.identifier, root,
                                            self.settings.qido_max_results)
            if request.level == "PATIENT":
                result = reads.search_patients(self.store, request.query, principal)
            else:
                result = reads.search(self.store, request.query, principal)
        except find.IdentifierError as exc:
            yield find_failure(exc.status, exc.message, exc.tag), None
            return
        except BadRequest as exc:  # QIDO's engine: a key that is not of this level
            yield find_failure(find.IDENTIFIER_DOES_NOT_MATCH, exc.message), None
            return
        except Exception:
            log.exception("C-FIND from %s failed", principal.subject)
            yield find_failure(find.UNABLE_TO_PROCESS, "the server could not run the query"), None
            return
        found = study_subjects(json_value(row, "0020000D") for row in result.rows)
        if not self.recorded(event, principal, "query", 0 if not result.more else
                             find.OUT_OF_RESOURCES, [s for s in found if s.study],
                             find_keys(event), started_at):
            yield find_failure(find.UNABLE_TO_PROCESS, "the audit trail cannot be written"), None
            return
        if result.more:
            yield find_failure(
                find.OUT_OF_RESOURCES,
                f"more than {self.settings.qido_max_results} matches: narrow the query",
            ), None
            return
        for match in result.rows:
            if event.is_cancelled:
                yield find.CANCEL, None
                return
            yield find.PENDING, find.response_identifier(match, request, self.settings.ae_title)
            find.wait_until_sent(event.assoc)

    def on_c_move(self, event: evt.Event) -> retrieve.RetrievePlan:
        principal = self.allowed(event)
        destination = self.destinations.get(str(event.request.MoveDestination).strip())
        if destination is None and principal.has(READ):
            return retrieve.refused(
                retrieve.DESTINATION_UNKNOWN,
                f"{event.request.MoveDestination} is not in DICOMWEB_DIMSE_DESTINATIONS",
            )
        plan = self.plan(event, principal)
        plan.destination = destination
        return plan

    def on_c_get(self, event: evt.Event) -> retrieve.RetrievePlan:
        return self.plan(event, self.allowed(event))

    def plan(self, event: evt.Event, principal: Principal) -> retrieve.RetrievePlan:
        """The retrieve's instances, recorded (Begin Transferring) before any is sent."""
        started_at = utc_timestamp()
        try:
            identifier = event.identifier
        except Exception:
            return retrieve.refused(retrieve.UNABLE_TO_PROCESS, "undecodable Identifier")
        plan = retrieve.plan_retrieve(self.store, self.limits, principal, identifier,
                                      str(event.request.AffectedSOPClassUID))
        subjects = instance_subjects((i.study_instance_uid, i.series_instance_uid,
                                      i.sop_instance_uid) for i in plan.instances)
        if not self.recorded(event, principal, "read", plan.status or 0, subjects,
                             find_keys(event), started_at):
            return retrieve.refused(retrieve.UNABLE_TO_PROCESS,
                                    "the audit trail cannot be written")
        return plan

    def on_n_action(self, event: evt.Event) -> tuple[int, None]:
        """Storage commitment: recorded as a query of the instances' state."""
        principal = self.allowed(event)
        status, reply = self.commitments.handle_action(event, principal)
        if not self.recorded(event, principal, "query", status, []):
            return AUDIT_UNAVAILABLE, None
        return status, reply


def json_value(row: dict[str, Any], tag: str) -> str:
    values = row.get(tag, {}).get("Value") or [""]
    return str(values[0])


def find_keys(event: evt.Event) -> str:
    """The Identifier's non-empty keys, as a query string (for the record's `query`)."""
    try:
        identifier = event.identifier
    except Exception:
        return ""
    return "&".join(f"{element.keyword}={element.value}" for element in identifier
                    if element.keyword and element.VR != "SQ" and element.value not in ("", None))


def calling_ae_title(assoc: Any) -> str:
    """The requester's AE title, from its A-ASSOCIATE-RQ (set before negotiation starts)."""
    return str(assoc.requestor.primitive.calling_ae_title).strip()


def find_failure(code: int, comment: str, tag: int | None = None) -> Any:
    status = storage.status(code, comment)
    if tag is not None:
        status.OffendingElement = [tag]
    return status


def build_ae(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = MAX_PDU_SIZE
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.connection_timeout = 10
    ae.add_supported_context(Verification)
    for model in QUERY_RETRIEVE_MODELS:
        ae.add_supported_context(model)
    ae.add_supported_context(StorageCommitmentPushModel)
    # Storage contexts: any proposed (hooks: UNRESTRICTED_STORAGE_SERVICE), with the SCP role
    # a C-GET requester asks for (PS3.7 D.3.3.4).
    return ae
