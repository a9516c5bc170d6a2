"""Storage Commitment Push Model against a real server (SQLite and PostgreSQL). dcmtk has no
Storage Commitment SCU, so pynetdicom plays the modality: N-ACTION, then the N-EVENT-REPORT
on the same association, or on a new one to the modality's configured address."""

from __future__ import annotations

import threading

import factory
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from dicomweb.dimse.commitment import WELL_KNOWN_INSTANCE

TIMEOUT_S = 20


@pytest.fixture
def stored(dimse_server) -> list[Dataset]:
    datasets = [factory.image() for _ in range(2)]
    response = dimse_server.http.stow(*datasets)
    assert response.status_code == 200, response.text
    return datasets


def request_for(datasets: list[Dataset], extra: list[tuple[str, str]] = ()) -> Dataset:
    request = Dataset()
    request.TransactionUID = factory.new_uid()
    items = []
    for sop_class, sop in [(d.SOPClassUID, d.SOPInstanceUID) for d in datasets] + list(extra):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    request.ReferencedSOPSequence = Sequence(items)
    return request


class Reports:
    """N-EVENT-REPORTs received, as (Event Type ID, Event Information)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event: evt.Event) -> tuple[int, None]:
        self.received.append((event.request.EventTypeID, event.event_information))
        self.arrived.set()
        return 0x0000, None


def modality(aet: str = "COMMITTER") -> AE:
    ae = AE(ae_title=aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def ask(port: int, request: Dataset, reports: Reports | None, aet: str = "COMMITTER",
        wait: bool = True) -> int:
    """N-ACTION; when `wait`, keep the association until the report arrives."""
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handle)] if reports else []
    assoc = modality(aet).associate("127.0.0.1", port, ae_title="DICOMWEB",
                                    evt_handlers=handlers)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                        WELL_KNOWN_INSTANCE)
        if wait and status.Status == 0 and reports:
            assert reports.arrived.wait(TIMEOUT_S), "no N-EVENT-REPORT on the association"
        return int(status.Status)
    finally:
        assoc.release()


def referenced(report: Dataset, sequence: str) -> list[str]:
    return sorted(item.ReferencedSOPInstanceUID for item in report.get(sequence, []))


def test_report_on_the_same_association(dimse_server, stored) -> None:
    reports = Reports()
    request = request_for(stored)
    assert ask(dimse_server.port, request, reports) == 0x0000
    ((event_type, report),) = reports.received
    assert event_type == 1  # all committed
    assert report.TransactionUID == request.TransactionUID
    assert referenced(report, "ReferencedSOPSequence") == sorted(d.SOPInstanceUID for d in stored)
    assert "FailedSOPSequence" not in report


def test_report_on_a_new_association_lists_failures(dimse_server, stored) -> None:
    """The modality releases at once; the report comes to its address (COMMITTER in
    DICOMWEB_DIMSE_DESTINATIONS), the SCP role proposed by the server."""
    reports = Reports()
    listener = AE(ae_title="COMMITTER")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = listener.start_server(("127.0.0.1", dimse_server.report_port), block=False,
                                   evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    try:
        missing = (stored[0].SOPClassUID, factory.new_uid())
        conflict = ("1.2.840.10008.5.1.4.1.1.4", stored[1].SOPInstanceUID)  # MR, stored as CT
        request = request_for(stored[:1], [missing, conflict])
        assert ask(dimse_server.port, request, None, wait=False) == 0x0000
        assert reports.arrived.wait(TIMEOUT_S), "no N-EVENT-REPORT on a new association"
    finally:
        server.shutdown()
    ((event_type, report),) = reports.received
    assert event_type == 2  # failures exist
    assert referenced(report, "ReferencedSOPSequence") == [stored[0].SOPInstanceUID]
    reasons = {item.ReferencedSOPInstanceUID: item.FailureReason
               for item in report.FailedSOPSequence}
    assert reasons == {missing[1]: 0x0112, conflict[1]: 0x0119}


def test_refusals(dimse_server, stored) -> None:
    assert ask(dimse_server.port, request_for(stored), None, aet="READER", wait=False) == 0x0124
    empty = Dataset()
    empty.TransactionUID = factory.new_uid()
    assert ask(dimse_server.port, empty, None, wait=False) == 0x0120
