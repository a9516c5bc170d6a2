"""The audit trail end to end: a real server (two workers) on SQLite and PostgreSQL, records
read back from the database itself and through GET /audit, and `dicomweb audit verify` finding
rows altered, deleted and inserted directly in the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import factory
import pytest
import requests
from conftest import Server, start_server, stop_server
from sqlalchemy import Engine, create_engine, text

TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def database_url(server: Server) -> str:
    return server.database_url or f"sqlite:///{server.data_dir / 'index.sqlite'}"


@pytest.fixture(scope="module")
def audited(own_database: str | None, tmp_path_factory) -> Iterator[tuple[Server, Engine]]:
    server = start_server(tmp_path_factory.mktemp("audit"), own_database, workers=2)
    engine = create_engine(database_url(server))
    try:
        yield server, engine
    finally:
        engine.dispose()
        stop_server(server)


def record_of(engine: Engine, request_id: str) -> dict:
    """The record of one request, read from the database directly."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM audit_trail WHERE request_id = :r"), {"r": request_id}
        ).mappings().all()
    assert len(rows) == 1, f"{len(rows)} records for request {request_id}"
    record = dict(rows[0])
    record["subjects"] = json.loads(record["studies"])
    return record


def new_study(server: Server, patient_id: str, issuer: str | None = None) -> dict:
    study, series = factory.new_uid(), factory.new_uid()
    datasets = [factory.image(study=study, series=series, patient_id=patient_id,
                              instance_number=i) for i in (1, 2)]
    if issuer:
        for ds in datasets:
            ds.IssuerOfPatientID = issuer
    response = server.stow(*datasets)
    assert response.status_code == 200, response.text
    return {"study": study, "series": series, "response": response,
            "instances": [str(ds.SOPInstanceUID) for ds in datasets]}


def test_each_request_is_recorded_before_its_response(audited) -> None:
    """STOW, QIDO, metadata, frames, a miss and a delete: each record is in the database when
    its response arrives, with who, where from, what, the index's patient and the status."""
    server, engine = audited
    patient = "AUD-" + uuid.uuid4().hex[:8]
    before = datetime.now(timezone.utc)
    stored = new_study(server, patient, issuer="HOSP-A")
    record = record_of(engine, stored["response"].headers["X-Request-Id"])
    assert (record["action"], record["status"], record["method"]) == ("create", 200, "POST")
    assert (record["who"], record["user_kind"], record["client_address"]) == (
        "anonymous", "anonymous", "127.0.0.1")
    assert before <= datetime.strptime(record["event_time"], TIMESTAMP).replace(
        tzinfo=timezone.utc) <= datetime.now(timezone.utc)
    (subject,) = record["subjects"]
    assert (subject["study"], subject["patient_id"], subject["issuer"]) == (
        stored["study"], patient, "HOSP-A")
    assert subject["series"] == [stored["series"]]
    assert sorted(subject["instances"]) == sorted(stored["instances"])

    search = requests.get(f"{server.url}/studies", params={"PatientID": patient}, timeout=30)
    record = record_of(engine, search.headers["X-Request-Id"])
    assert (record["action"], record["status"]) == ("query", 200)
    assert record["query"] == f"PatientID={patient}"
    assert [s["study"] for s in record["subjects"]] == [stored["study"]]

    base = f"{server.url}/studies/{stored['study']}/series/{stored['series']}"
    frame = requests.get(f"{base}/instances/{stored['instances'][0]}/frames/1", timeout=30,
                         headers={"Accept": "multipart/related; type=application/octet-stream"})
    assert frame.status_code == 200
    record = record_of(engine, frame.headers["X-Request-Id"])
    assert record["action"] == "read" and record["path"].endswith("/frames/1")
    (subject,) = record["subjects"]
    assert subject["series"] == [stored["series"]]
    assert subject["instances"] == [stored["instances"][0]]
    assert subject["patient_id"] == patient

    missing = requests.get(f"{server.url}/studies/1.2.3.999/metadata", timeout=30)
    record = record_of(engine, missing.headers["X-Request-Id"])
    assert (record["action"], record["status"]) == ("read", 404)
    assert record["subjects"][0]["patient_id"] is None  # the index knows no such study

    deleted = requests.delete(base, timeout=30)
    assert deleted.status_code in (200, 204)
    record = record_of(engine, deleted.headers["X-Request-Id"])
    assert (record["action"], record["status"]) == ("delete", deleted.status_code)
    # Looked up before the delete removed it from the index.
    assert record["subjects"][0]["patient_id"] == patient

    health = requests.get(f"{server.origin}/healthz", timeout=30)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_trail WHERE request_id "
                                       "= :r"), {"r": health.headers["X-Request-Id"]}).scalar() == 0


def test_concurrent_requests_of_two_workers_form_one_chain(audited) -> None:
    """Requests spread over both workers, eight at a time: one record each, gapless sequence
    numbers, one intact chain."""
    server, engine = audited
    stored = new_study(server, "AUD-CONC")
    url = f"{server.url}/studies/{stored['study']}/metadata"

    def fetch(_: int) -> str:
        response = requests.get(url, timeout=60)
        assert response.status_code == 200
        return response.headers["X-Request-Id"]

    with ThreadPoolExecutor(8) as pool:
        request_ids = list(pool.map(fetch, range(80)))
    with engine.connect() as connection:
        seqs = [row[0] for row in connection.execute(text("SELECT seq FROM audit_trail "
                                                          "ORDER BY seq"))]
        counts = dict(connection.execute(text(
            "SELECT request_id, count(*) FROM audit_trail GROUP BY request_id")).all())
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(counts.get(r) == 1 for r in request_ids)
    verdict = verify(server)
    assert verdict.returncode == 0, verdict.stderr
    assert f"{len(seqs)} records" in verdict.stdout


def test_audit_search_filters(audited) -> None:
    server, _ = audited
    patient = "AUD-F-" + uuid.uuid4().hex[:6]
    first, second = new_study(server, patient), new_study(server, patient)
    requests.get(f"{server.url}/studies/{first['study']}/metadata", timeout=30)
    requests.get(f"{server.url}/studies/{second['study']}/series", timeout=30)

    def audit(**params) -> list[dict]:
        response = requests.get(f"{server.url}/audit", params=params, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    mine = audit(patient=patient)
    assert [r["action"] for r in mine] == ["query", "read", "create", "create"]  # newest first
    assert [r["action"] for r in audit(study=first["study"])] == ["read", "create"]
    assert [r["operation"] for r in audit(patient=patient, action="create")] == ["create"] * 2
    assert len(audit(patient=patient, action="read,query")) == 2
    assert len(audit(patient=patient, limit=1, offset=1)) == 1
    assert audit(patient=patient, limit=1, offset=1)[0]["seq"] == mine[1]["seq"]
    assert audit(patient=patient, user="anonymous") == audit(patient=patient)
    assert audit(patient=patient, user="somebody-else") == []
    oldest = mine[-1]["time"]
    assert audit(patient=patient, until=oldest)[0]["seq"] == mine[-1]["seq"]
    assert len(audit(patient=patient, since=oldest)) == 4
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert audit(patient=patient, since=tomorrow) == []
    assert len(audit(patient=patient, until=tomorrow)) == 4
    # The same answers once the records are in the search index (built in batches, about
    # every second), instead of found in the newest records directly.
    _, engine = audited
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            indexed = connection.execute(text("SELECT indexed_seq FROM audit_chain")).scalar()
        if indexed >= mine[0]["seq"]:
            break
        time.sleep(0.2)
    assert indexed >= mine[0]["seq"], "the search index did not catch up"
    assert audit(patient=patient) == mine
    assert [r["action"] for r in audit(study=first["study"])] == ["read", "create"]
    for bad in ({"action": "peek"}, {"since": "yesterday"}, {"limit": "0"}, {"offset": "x"}):
        response = requests.get(f"{server.url}/audit", params=bad, timeout=30)
        assert response.status_code == 400, bad
        assert list(bad)[0] in response.text


def test_audit_as_fhir_bundle(audited) -> None:
    """IHE BALP: one AuditEvent per patient, the patient and study as entities, the request id
    as the transaction entity, the query base64 encoded."""
    server, _ = audited
    tag = uuid.uuid4().hex[:6]
    one = new_study(server, f"AUD-P1-{tag}", issuer="HOSP-B")
    new_study(server, f"AUD-P2-{tag}")
    listing = requests.get(f"{server.url}/studies", params={"PatientID": f"AUD-P?-{tag}"},
                           timeout=30)
    assert len(listing.json()) == 2
    response = requests.get(f"{server.url}/audit", params={"patient": f"AUD-P1-{tag}"},
                            headers={"Accept": "application/fhir+json"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "searchset")
    events = [entry["resource"] for entry in bundle["entry"]]
    assert [e["action"] for e in events] == ["E", "C"]  # the query, then the STOW
    query, create = events
    assert query["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"]
    assert {c["code"] for c in query["subtype"]} == {"search", "110112"}
    # The study list showed two patients: this bundle holds P1's AuditEvent only.
    patients = [e["what"]["identifier"] for e in query["entity"]
                if e.get("role", {}).get("code") == "1"]
    assert patients == [{"value": f"AUD-P1-{tag}", "assigner": {"display": "HOSP-B"}}]
    studies = [e["what"]["identifier"]["value"] for e in query["entity"]
               if e.get("role", {}).get("code") == "3"]
    assert studies == [f"urn:oid:{one['study']}"]
    (raw,) = [e for e in query["entity"] if e.get("role", {}).get("code") == "24"]
    assert f"PatientID=AUD-P%3F-{tag}" in raw["description"]
    (request_id,) = [e for e in query["entity"] if e["type"]["code"] == "XrequestId"]
    assert request_id["what"]["identifier"]["value"] == listing.headers["X-Request-Id"]
    assert create["recorded"].endswith("Z") and create["outcome"] == "0"
    details = [d["valueString"] for e in create["entity"] for d in e.get("detail", [])]
    assert set(one["instances"]) <= set(details)


def test_credentials_never_recorded(audited) -> None:
    server, engine = audited
    secret = "s3cr3t-" + uuid.uuid4().hex
    first = requests.get(f"{server.url}/studies", params={"token": secret, "PatientID": "x"},
                         timeout=30)
    requests.get(f"{server.url}/studies", params={"access_token": secret}, timeout=30,
                 headers={"Authorization": f"Bearer {secret}"})
    assert "PatientID=x" in record_of(engine, first.headers["X-Request-Id"])["query"]
    with engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM audit_trail")).all())
        dump += repr(connection.execute(text("SELECT * FROM audit_index")).all())
    assert secret not in dump
    assert secret not in requests.get(f"{server.url}/audit", timeout=30).text


def verify(server: Server) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dicomweb.cli", "audit", "verify",
               "--data", str(server.data_dir)]
    if server.database_url:
        command += ["--database-url", server.database_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_verify_names_altered_deleted_and_inserted_records(audited) -> None:
    """Tampering directly in the database: each change is found and the record named; undoing
    it makes the chain whole again."""
    server, engine = audited
    new_study(server, "AUD-TAMPER")
    assert verify(server).returncode == 0
    with engine.begin() as connection:
        rows = [dict(r) for r in connection.execute(
            text("SELECT * FROM audit_trail ORDER BY seq")).mappings()]
    last = rows[-1]["seq"]
    # A record in the middle of the chain that names a patient.
    victim = next(r for r in rows[2:-2] if '"patient_id":"AUD-' in r["studies"])
    seq, patient = victim["seq"], json.loads(victim["studies"])[0]["patient_id"]

    def broken(change: str, params: dict, expected: str) -> None:
        with engine.begin() as connection:
            connection.execute(text(change), params)
        verdict = verify(server)
        assert verdict.returncode == 1, verdict.stdout
        assert expected in verdict.stderr, verdict.stderr

    def restore(change: str, params: dict) -> None:
        with engine.begin() as connection:
            connection.execute(text(change), params)
        assert verify(server).returncode == 0

    update = "UPDATE audit_trail SET {} = :v WHERE seq = :s"
    broken(update.format("who"), {"v": "mallory", "s": seq}, f"record {seq} was altered")
    restore(update.format("who"), {"v": victim["who"], "s": seq})
    # The studies and patients a record names are under its hash too.
    other = victim["studies"].replace(patient, "SOMEONE-ELSE")
    broken(update.format("studies"), {"v": other, "s": seq}, f"record {seq} was altered")
    restore(update.format("studies"), {"v": victim["studies"], "s": seq})

    broken("DELETE FROM audit_trail WHERE seq = :s", {"s": seq}, f"record {seq} is missing")
    columns = ", ".join(victim)
    insert = f"INSERT INTO audit_trail ({columns}) VALUES ({', '.join(f':{c}' for c in victim)})"
    restore(insert, victim)

    forged = {**victim, "seq": last + 1, "request_id": "forged", "prev_hash": rows[-1]["hash"]}
    broken(insert, forged, f"record {last + 1} was inserted")
    restore("DELETE FROM audit_trail WHERE seq = :s", {"s": last + 1})
    # The newest record deleted: the head still names it.
    broken("DELETE FROM audit_trail WHERE seq = :s", {"s": last}, f"record {last} is missing")


def test_refused_when_the_trail_cannot_be_written(tmp_path: Path) -> None:
    """No record, no data: with the audit table gone the server answers 503, not the data."""
    server = start_server(tmp_path / "data", None)
    try:
        stored = new_study(server, "AUD-503")
        engine = create_engine(database_url(server))
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_trail RENAME TO audit_gone"))
        engine.dispose()
        response = requests.get(f"{server.url}/studies/{stored['study']}/metadata", timeout=60)
        assert response.status_code == 503
        assert "audit trail" in response.json()["error"]["message"]
        assert stored["study"] not in response.text
        assert "audit_gone" not in response.text
    finally:
        stop_server(server)
    assert "audit append of 1 records failed" in server.log()


def test_audit_off(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", None, extra=["--audit", "off"])
    try:
        new_study(server, "AUD-OFF")
        assert requests.get(f"{server.url}/audit", timeout=30).json() == []
    finally:
        stop_server(server)
