"""C-MOVE with movescu to dcmtk's storescp and C-GET with getscu, against a real server
(SQLite and PostgreSQL): stored bytes sent as stored, a transcode when the peer does not accept
the stored syntax, sub-operation counts, per-instance failures and the PS3.4 refusals."""

from __future__ import annotations

import re
from pathlib import Path

import factory
import numpy as np
import pytest
import requests
from dcmtk import dataset_bytes, keys, peer, requires_dcmtk, run, statuses
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomweb.config import Settings
from dicomweb.store.repository import Store

pytestmark = requires_dcmtk
COUNT = re.compile(r"(Remaining|Completed|Failed|Warning) Sub-?operations\s*:\s*(\d+)",
                   re.IGNORECASE)


def final_counts(output: str) -> dict[str, int]:
    """The sub-operation counts of the last response a dcmtk tool printed."""
    counts: dict[str, int] = {}
    for name, value in COUNT.findall(output):
        counts[name.lower()] = int(value)
    return counts


@pytest.fixture
def stowed(dimse_server) -> dict:
    """A study stored by STOW: CT series of 3, MR series of 2 (2 frames each)."""
    study, ct, mr = factory.new_uid(), factory.new_uid(), factory.new_uid()
    patient = "PID-" + study[-8:]
    datasets = [factory.image(study=study, series=ct, patient_id=patient, instance_number=i)
                for i in (1, 2, 3)]
    datasets += [factory.image(study=study, series=mr, patient_id=patient, modality="MR",
                               series_number=2, instance_number=i, frames=2) for i in (1, 2)]
    response = dimse_server.http.stow(*datasets)
    assert response.status_code == 200, response.text
    return {"study": study, "ct": ct, "mr": mr, "datasets": datasets}


def move(dimse_server, destination: str = "DEST", aet: str = "TEST", model: str = "-S",
         **identifier) -> str:
    return run("movescu", model, "-aem", destination, *peer(dimse_server.port, aet=aet),
               *keys(**identifier))


def test_move_study_sends_what_stow_stored(dimse_server, stowed) -> None:
    output = move(dimse_server, QueryRetrieveLevel="STUDY", StudyInstanceUID=stowed["study"])
    assert statuses(output)[-1] == 0x0000, output
    assert statuses(output).count(0xFF00) == 4  # Pending after each but the last
    assert final_counts(output) | {"remaining": 0} == {
        "remaining": 0, "completed": 5, "failed": 0, "warning": 0}
    for ds in stowed["datasets"]:
        received = dimse_server.destination.received(ds.SOPInstanceUID)
        assert dataset_bytes(received) == dataset_bytes(factory.to_bytes(ds))


def test_move_series_and_instances(dimse_server, stowed) -> None:
    output = move(dimse_server, QueryRetrieveLevel="SERIES", StudyInstanceUID=stowed["study"],
                  SeriesInstanceUID=stowed["mr"])
    assert statuses(output)[-1] == 0 and final_counts(output)["completed"] == 2
    wanted = [ds.SOPInstanceUID for ds in stowed["datasets"][:2]]
    output = move(dimse_server, QueryRetrieveLevel="IMAGE", StudyInstanceUID=stowed["study"],
                  SeriesInstanceUID=stowed["ct"], SOPInstanceUID="\\".join(wanted))
    assert statuses(output)[-1] == 0 and final_counts(output)["completed"] == 2


def test_move_patient_root(dimse_server, stowed) -> None:
    patient = stowed["datasets"][0].PatientID
    output = move(dimse_server, model="-P", QueryRetrieveLevel="PATIENT", PatientID=patient)
    assert statuses(output)[-1] == 0 and final_counts(output)["completed"] == 5


def test_move_refusals(dimse_server, stowed) -> None:
    study = stowed["study"]
    unknown = move(dimse_server, "NOWHERE", QueryRetrieveLevel="STUDY", StudyInstanceUID=study)
    assert statuses(unknown)[-1] == 0xA801
    down = move(dimse_server, "DOWN", QueryRetrieveLevel="STUDY", StudyInstanceUID=study)
    assert statuses(down)[-1] == 0xA702
    writer = move(dimse_server, aet="WRITER", QueryRetrieveLevel="STUDY", StudyInstanceUID=study)
    assert statuses(writer)[-1] == 0x0124
    no_key = move(dimse_server, QueryRetrieveLevel="SERIES", StudyInstanceUID=study)
    assert statuses(no_key)[-1] == 0xA900
    nothing = move(dimse_server, QueryRetrieveLevel="STUDY", StudyInstanceUID=factory.new_uid())
    assert statuses(nothing)[-1] == 0x0000 and final_counts(nothing)["completed"] == 0


def test_move_reports_each_failed_instance(dimse_server, stowed) -> None:
    """An instance whose file is gone fails alone; the others are sent."""
    lost = stowed["datasets"][1]
    store = Store(Settings(data_dir=dimse_server.http.data_dir,
                           database_url=dimse_server.http.database_url))
    try:
        (location,) = store.locate(stowed["study"], stowed["ct"], lost.SOPInstanceUID)
        store.blobs.path(location.blob_key).unlink()
    finally:
        store.close()
    output = move(dimse_server, QueryRetrieveLevel="STUDY", StudyInstanceUID=stowed["study"])
    assert statuses(output)[-1] == 0xB000, output
    assert final_counts(output) | {"remaining": 0} == {
        "remaining": 0, "completed": 4, "failed": 1, "warning": 0}
    assert lost.SOPInstanceUID in output.split("Received Final Move Response")[-1]
    for ds in stowed["datasets"]:
        if ds is not lost:
            dimse_server.destination.received(ds.SOPInstanceUID)


def get(dimse_server, folder: Path, *options: str, aet: str = "TEST", **identifier) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return run("getscu", "-S", "+B", "-od", str(folder), *options,
               *peer(dimse_server.port, aet=aet), *keys(**identifier))


def received_file(folder: Path, sop: str) -> Path:
    (path,) = [p for p in folder.iterdir() if p.name == sop or p.name.endswith("." + sop)]
    return path


def test_get_sends_stored_bytes(dimse_server, stowed, tmp_path) -> None:
    output = get(dimse_server, tmp_path, QueryRetrieveLevel="STUDY",
                 StudyInstanceUID=stowed["study"])
    assert statuses(output)[-1] == 0x0000, output
    assert final_counts(output)["completed"] == 5
    for ds in stowed["datasets"]:
        received = received_file(tmp_path, ds.SOPInstanceUID)
        assert dataset_bytes(received) == dataset_bytes(factory.to_bytes(ds))


def test_get_transcodes_when_the_stored_syntax_is_not_accepted(dimse_server, stowed,
                                                               tmp_path) -> None:
    """getscu +xd proposes Deflated, Explicit VR Little and Big Endian in one context: the
    first we can produce losslessly is accepted, and the stored explicit VR data deflated."""
    output = get(dimse_server, tmp_path, "+xd", QueryRetrieveLevel="SERIES",
                 StudyInstanceUID=stowed["study"], SeriesInstanceUID=stowed["ct"])
    assert statuses(output)[-1] == 0x0000, output
    for ds in stowed["datasets"][:3]:
        received = dcmread(received_file(tmp_path, ds.SOPInstanceUID))
        assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"  # deflated
        assert received.SOPInstanceUID == ds.SOPInstanceUID
        assert received.PixelData == ds.PixelData


def test_get_prefers_a_syntax_it_can_send(dimse_server, stowed, tmp_path) -> None:
    """getscu +xb proposes Explicit VR Big Endian first: the stored bytes go as they are in
    the Explicit VR Little Endian it also proposed."""
    output = get(dimse_server, tmp_path, "+xb", QueryRetrieveLevel="SERIES",
                 StudyInstanceUID=stowed["study"], SeriesInstanceUID=stowed["ct"])
    assert statuses(output)[-1] == 0x0000, output
    for ds in stowed["datasets"][:3]:
        received = received_file(tmp_path, ds.SOPInstanceUID)
        assert dataset_bytes(received) == dataset_bytes(factory.to_bytes(ds))


def test_get_decompresses_for_a_peer_without_the_codec(dimse_server, tmp_path) -> None:
    original = dcmread(get_testdata_file("MR_small_RLE.dcm"))
    response = dimse_server.http.stow(original)
    assert response.status_code in (200, 202), response.text
    output = get(dimse_server, tmp_path, QueryRetrieveLevel="IMAGE",
                 StudyInstanceUID=original.StudyInstanceUID,
                 SeriesInstanceUID=original.SeriesInstanceUID,
                 SOPInstanceUID=original.SOPInstanceUID)
    assert statuses(output)[-1] == 0x0000, output
    received = dcmread(received_file(tmp_path, original.SOPInstanceUID))
    assert not received.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(received.pixel_array, original.pixel_array)


def test_get_refusals(dimse_server, stowed, tmp_path) -> None:
    reader = get(dimse_server, tmp_path / "r", aet="READER", QueryRetrieveLevel="STUDY",
                 StudyInstanceUID=stowed["study"])
    assert statuses(reader)[-1] == 0x0000
    writer = get(dimse_server, tmp_path / "w", aet="WRITER", QueryRetrieveLevel="STUDY",
                 StudyInstanceUID=stowed["study"])
    assert statuses(writer)[-1] == 0x0124
    assert not list((tmp_path / "w").iterdir())


def test_stored_by_dimse_is_retrieved_by_wado(dimse_server, tmp_path) -> None:
    ds = factory.image()
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert statuses(run("storescu", *peer(dimse_server.port), str(path))) == [0]
    response = requests.get(
        f"{dimse_server.http.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'}, timeout=30)
    assert response.status_code == 200
    (_, frame), = factory.parse_multipart(response.headers["content-type"], response.content)
    assert frame == ds.PixelData
