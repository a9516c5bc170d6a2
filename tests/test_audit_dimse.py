"""DIMSE operations in the audit trail, with dcmtk's tools as the peers: who is the calling AE
title and its address, the actions and resources as DICOMweb's (C-STORE create, C-FIND
query, C-MOVE / C-GET read, refusals denied), each in the trail and in its hash chain."""

from __future__ import annotations

import subprocess
import sys
import uuid

import factory
import pytest
import requests
from dcmtk import keys, peer, requires_dcmtk, run, statuses

pytestmark = requires_dcmtk

NOT_AUTHORIZED = 0x0124


def audit(dimse_server, **params: str) -> list[dict]:
    response = requests.get(f"{dimse_server.http.url}/audit", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def by_method(records: list[dict], method: str) -> list[dict]:
    return [r for r in records if r["method"] == method]


@pytest.fixture(scope="module")
def stored(dimse_server, tmp_path_factory) -> dict:
    """One study of two instances, sent by storescu as TEST."""
    folder = tmp_path_factory.mktemp("audit-dimse")
    patient = f"AUDD{uuid.uuid4().hex[:8].upper()}"
    study, series = factory.new_uid(), factory.new_uid()
    datasets = [factory.image(study=study, series=series, patient_id=patient,
                              instance_number=i) for i in (1, 2)]
    paths = []
    for number, ds in enumerate(datasets):
        path = folder / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    assert statuses(run("storescu", *peer(dimse_server.port), *paths)) == [0, 0]
    return {"patient": patient, "study": study, "series": series,
            "instances": [ds.SOPInstanceUID for ds in datasets]}


def test_c_store_is_recorded_as_create(dimse_server, stored) -> None:
    records = by_method(audit(dimse_server, study=stored["study"]), "C-STORE")
    assert len(records) == 2
    for record in records:
        assert (record["action"], record["operation"], record["status"]) == ("create",
                                                                           "create", 0)
        assert (record["user"], record["user_kind"]) == ("TEST", "dimse")
        assert record["client_address"] == "127.0.0.1"
        assert record["path"] == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        (study,) = record["studies"]
        assert study["study_instance_uid"] == stored["study"]
        assert study["patient_id"] == stored["patient"]
        assert study["series_instance_uids"] == [stored["series"]]
    assert sorted(i for r in records for i in r["studies"][0]["sop_instance_uids"]) == \
        sorted(stored["instances"])
    # Found by patient and by user too, like any record.
    assert len(by_method(audit(dimse_server, patient=stored["patient"], user="TEST"),
                         "C-STORE")) == 2


def test_c_find_is_recorded_as_query(dimse_server, stored, tmp_path) -> None:
    output = run("findscu", "-S", *peer(dimse_server.port, aet="READER"),
                 *keys(QueryRetrieveLevel="STUDY", PatientID=stored["patient"],
                       StudyInstanceUID=None))
    assert statuses(output)[-1] == 0
    (record,) = by_method(audit(dimse_server, patient=stored["patient"], user="READER"),
                          "C-FIND")
    assert (record["action"], record["status"]) == ("query", 0)
    assert [s["study_instance_uid"] for s in record["studies"]] == [stored["study"]]
    assert f"PatientID={stored['patient']}" in record["query"]
    assert "QueryRetrieveLevel=STUDY" in record["query"]


def test_c_get_and_c_move_are_recorded_as_read(dimse_server, stored, tmp_path) -> None:
    identifier = keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=stored["study"])
    output = run("getscu", "-S", "+B", "-od", str(tmp_path), *peer(dimse_server.port),
                 *identifier)
    assert statuses(output)[-1] == 0, output
    output = run("movescu", "-S", "-aem", "DEST", *peer(dimse_server.port), *identifier)
    assert statuses(output)[-1] == 0, output
    records = audit(dimse_server, study=stored["study"], action="read")
    for method in ("C-GET", "C-MOVE"):
        (record,) = by_method(records, method)
        assert (record["user"], record["status"]) == ("TEST", 0)
        (study,) = record["studies"]
        assert sorted(study["sop_instance_uids"]) == sorted(stored["instances"])
        assert study["patient_id"] == stored["patient"]


def test_refusals_are_recorded_as_denied(dimse_server, stored, tmp_path) -> None:
    output = run("findscu", "-S", *peer(dimse_server.port, aet="WRITER"),
                 *keys(QueryRetrieveLevel="STUDY", PatientID=stored["patient"]))
    assert statuses(output)[-1] == NOT_AUTHORIZED
    output = run("getscu", "-S", "+B", "-od", str(tmp_path), *peer(dimse_server.port,
                                                                    aet="WRITER"),
                 *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=stored["study"]))
    assert statuses(output)[-1] == NOT_AUTHORIZED
    path = tmp_path / "refused.dcm"
    factory.image().save_as(path, enforce_file_format=True)
    assert statuses(run("storescu", *peer(dimse_server.port, aet="READER"), str(path))) == \
        [NOT_AUTHORIZED]
    denied = audit(dimse_server, action="denied")
    assert {(r["user"], r["method"], r["operation"]) for r in denied} >= {
        ("WRITER", "C-FIND", "query"), ("WRITER", "C-GET", "read"),
        ("READER", "C-STORE", "create")}
    assert all(r["status"] == NOT_AUTHORIZED for r in denied if r["user_kind"] == "dimse")


def test_dimse_records_keep_the_chain_intact(dimse_server, stored) -> None:
    server = dimse_server.http
    command = [sys.executable, "-m", "dicomweb.cli", "audit", "verify",
               "--data", str(server.data_dir)]
    if server.database_url:
        command += ["--database-url", server.database_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "intact" in done.stdout
