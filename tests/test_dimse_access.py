"""DIMSE peers under `--study-access labels` (SQLite and PostgreSQL): a peer's labels go to
the studies it stores, and it finds, moves, gets and commits only studies carrying one of
them; the store filters, as for DICOMweb principals with labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import factory
import pytest
import requests
from conftest import free_port, start_server, stop_server
from dcmtk import keys, peer, requires_dcmtk, run, statuses
from pydicom import dcmread
from pydicom.dataset import Dataset
from test_dimse_commitment import Reports, ask, request_for

pytestmark = requires_dcmtk


@pytest.fixture(scope="module")
def labelled(backend, tmp_path_factory) -> Iterator[dict]:
    import dcmtk

    folder = tmp_path_factory.mktemp("dimse-labels")
    destination = dcmtk.start_storescp("DEST", free_port(), folder / "dest")
    port = free_port()
    env = {"DICOMWEB_DIMSE_PEERS": "ALPHA=read+write/alpha,BETA=read+write/beta,"
                                   "COMMITTER=read+write/alpha",
           "DICOMWEB_DIMSE_DESTINATIONS": f"DEST=127.0.0.1:{destination.port}"}
    server = start_server(folder / "data", backend, env=env,
                          extra=["--dimse-port", str(port), "--study-access", "labels"])
    studies = {}
    for aet in ("ALPHA", "BETA"):
        ds = factory.image()
        path = folder / f"{aet}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert statuses(run("storescu", *peer(port, aet=aet), str(path))) == [0]
        studies[aet] = ds
    yield {"server": server, "port": port, "studies": studies, "destination": destination}
    stop_server(server)
    destination.stop()


def study_uids(port: int, aet: str, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    run("findscu", "-S", "-X", "-od", str(folder), *peer(port, aet=aet),
        *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=None))
    return sorted(str(dcmread(p).StudyInstanceUID) for p in folder.glob("rsp*.dcm"))


def test_stored_studies_get_the_peers_labels(labelled) -> None:
    for aet, label in (("ALPHA", "alpha"), ("BETA", "beta")):
        study = labelled["studies"][aet].StudyInstanceUID
        response = requests.get(f"{labelled['server'].url}/studies/{study}/labels", timeout=30)
        assert response.status_code == 200 and label in response.text, response.text


def test_each_peer_finds_its_studies_only(labelled, tmp_path) -> None:
    alpha, beta = labelled["studies"]["ALPHA"], labelled["studies"]["BETA"]
    assert study_uids(labelled["port"], "ALPHA", tmp_path / "a") == [alpha.StudyInstanceUID]
    assert study_uids(labelled["port"], "BETA", tmp_path / "b") == [beta.StudyInstanceUID]


def test_retrieve_sees_what_find_sees(labelled, tmp_path) -> None:
    beta = labelled["studies"]["BETA"]
    identifier = keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=beta.StudyInstanceUID)
    moved = run("movescu", "-S", "-aem", "DEST", *peer(labelled["port"], aet="ALPHA"),
                *identifier)
    assert statuses(moved)[-1] == 0x0000 and "Completed Suboperations       : 0" in moved
    (tmp_path / "got").mkdir()
    got = run("getscu", "-S", "-od", str(tmp_path / "got"), *peer(labelled["port"], aet="ALPHA"),
              *identifier)
    assert statuses(got)[-1] == 0x0000 and not list((tmp_path / "got").iterdir())
    moved = run("movescu", "-S", "-aem", "DEST", *peer(labelled["port"], aet="BETA"), *identifier)
    assert statuses(moved)[-1] == 0x0000
    labelled["destination"].received(beta.SOPInstanceUID)


def test_commitment_of_a_hidden_study_fails(labelled) -> None:
    reports = Reports()
    beta = labelled["studies"]["BETA"]
    alpha = labelled["studies"]["ALPHA"]
    assert ask(labelled["port"], request_for([alpha, beta]), reports) == 0x0000
    ((event_type, report),) = reports.received
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [
        alpha.SOPInstanceUID]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [
        (beta.SOPInstanceUID, 0x0112)]


def test_a_peer_cannot_add_to_a_study_it_cannot_see(labelled, tmp_path) -> None:
    beta = labelled["studies"]["BETA"]
    intruder: Dataset = factory.image(study=beta.StudyInstanceUID)
    path = tmp_path / "into-beta.dcm"
    intruder.save_as(path, enforce_file_format=True)
    output = run("storescu", *peer(labelled["port"], aet="ALPHA"), str(path))
    (status,) = statuses(output)
    assert status != 0x0000, output
    found = requests.get(f"{labelled['server'].url}/studies/{beta.StudyInstanceUID}/instances",
                         timeout=30)
    assert [r["00080018"]["Value"][0] for r in found.json()] == [beta.SOPInstanceUID]
