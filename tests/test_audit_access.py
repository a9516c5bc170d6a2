"""The audit trail with authentication on: who is recorded for OIDC tokens (client credentials
and a user's login), API keys and share links; what the access layer refuses (401, 403 and the
404 of a hidden study) is recorded as `denied`; the trail is for admins only; no token, key or
share token ever reaches a record. A real OpenID provider (npm oidc-provider) on 127.0.0.1,
on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import factory
import pytest
import requests
from conftest import Server, start_server, stop_server
from oidc import DEFAULT_CLIENTS, Client, OidcProvider, free_port, start_provider
from sqlalchemy import create_engine, text


@pytest.fixture(scope="module")
def secured(own_database: str | None, tmp_path_factory) -> Iterator[tuple[Server, OidcProvider,
                                                                       str]]:
    """A server with OIDC, labels-based study access and one API key (printed once)."""
    data = tmp_path_factory.mktemp("audit-access")
    port = free_port()
    provider = start_provider(data / "idp", clients=[
        *DEFAULT_CLIENTS, Client("ohif", redirect_uris=(f"http://127.0.0.1:{port}/callback",))])
    command = [sys.executable, "-m", "dicomweb.cli", "apikey", "create", "--name", "scanner",
               "--scopes", "dicomweb:write", "--labels", "A", "--data", str(data)]
    if own_database:
        command += ["--database-url", own_database]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    created = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env,
                             check=True)
    key = created.stdout.split()[0]
    server = start_server(data, own_database, port=port,
                          env={"DICOMWEB_CREDENTIAL_CACHE_SECONDS": "0"},
                          extra=["--oidc-issuer", provider.issuer, "--oidc-audience",
                                 provider.audience, "--study-access", "labels"])
    try:
        yield server, provider, key
    finally:
        stop_server(server)
        provider.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_of(server: Server, provider: OidcProvider, response: requests.Response) -> dict:
    """The record of `response`'s request, found by its request id through GET /audit."""
    request_id = response.headers["X-Request-Id"]
    found = requests.get(f"{server.url}/audit", params={"limit": 1000}, timeout=30,
                         headers=bearer(provider.token("admin"))).json()
    (record,) = [r for r in found if r["request_id"] == request_id]
    return record


def stored_study(server: Server, key: str, patient: str) -> str:
    study = factory.new_uid()
    body, content_type = factory.multipart(
        [factory.to_bytes(factory.image(study=study, patient_id=patient))])
    response = requests.post(f"{server.url}/studies", data=body, timeout=60,
                             headers={"Content-Type": content_type, **bearer(key)})
    assert response.status_code == 200, response.text
    return study


def test_who_is_recorded_and_what_is_denied(secured) -> None:
    server, provider, key = secured
    patient = "AUD-ACC-" + uuid.uuid4().hex[:6]
    study = stored_study(server, key, patient)  # labelled A: the key's label

    # An API key: its name, never the key.
    search = requests.get(f"{server.url}/studies", params={"PatientID": patient},
                          headers=bearer(key), timeout=30)
    assert search.status_code == 403  # dicomweb:write only
    record = audit_of(server, provider, search)
    assert (record["action"], record["operation"], record["status"]) == ("denied", "query", 403)
    assert (record["user_kind"], record["user"]) == ("apikey", "scanner")

    # A token (client credentials) with label A reads the study: its sub and client id.
    reader_a = provider.token("reader-a")
    metadata = requests.get(f"{server.url}/studies/{study}/metadata", headers=bearer(reader_a),
                            timeout=30)
    assert metadata.status_code == 200
    record = audit_of(server, provider, metadata)
    assert (record["action"], record["user_kind"], record["client_id"]) == (
        "read", "oidc", "reader-a")
    assert record["studies"][0]["patient_id"] == patient

    # Label B may not see it: a 404 like an unknown UID, recorded as denied with its patient.
    hidden = requests.get(f"{server.url}/studies/{study}/metadata",
                          headers=bearer(provider.token("reader-b")), timeout=30)
    assert hidden.status_code == 404
    record = audit_of(server, provider, hidden)
    assert (record["action"], record["operation"], record["status"]) == ("denied", "read", 404)
    assert record["client_id"] == "reader-b"
    assert record["studies"][0]["patient_id"] == patient
    unknown = requests.get(f"{server.url}/studies/1.2.3.404/metadata",
                           headers=bearer(provider.token("reader-b")), timeout=30)
    assert (unknown.status_code, audit_of(server, provider, unknown)["action"]) == (404, "read")

    # A forged token: 401, recorded as denied to nobody in particular, without the token.
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0."  # alg none, sub mallory
    refused_token = requests.get(f"{server.url}/studies/{study}/metadata",
                                 headers=bearer(forged), timeout=30)
    assert refused_token.status_code == 401
    record = audit_of(server, provider, refused_token)
    assert (record["action"], record["user"], record["status"]) == ("denied", "anonymous", 401)
    assert "mallory" not in str(record) and forged not in str(record)

    # No credentials: 401, anonymous; a reader deleting: 403.
    anonymous = requests.get(f"{server.url}/studies/{study}/metadata", timeout=30)
    assert anonymous.status_code == 401
    record = audit_of(server, provider, anonymous)
    assert (record["action"], record["user"], record["status"]) == ("denied", "anonymous", 401)
    delete = requests.delete(f"{server.url}/studies/{study}", headers=bearer(reader_a),
                             timeout=30)
    assert delete.status_code == 403
    assert audit_of(server, provider, delete)["action"] == "denied"

    # A person through the login form (authorization code + PKCE): the user's sub.
    alice = provider.login("alice")["access_token"]
    listing = requests.get(f"{server.url}/studies", params={"PatientID": patient},
                           headers=bearer(alice), timeout=30)
    assert listing.status_code == 200
    record = audit_of(server, provider, listing)
    assert (record["action"], record["user"], record["client_id"]) == ("query", "alice", "ohif")
    assert [s["study_instance_uid"] for s in record["studies"]] == [study]

    # The trail itself: admins only; its reading is recorded too (PS3.15 Audit Log Used).
    refused = requests.get(f"{server.url}/audit", headers=bearer(alice), timeout=30)
    assert refused.status_code == 403
    assert audit_of(server, provider, refused)["action"] == "denied"
    mine = requests.get(f"{server.url}/audit", params={"user": "alice"}, timeout=30,
                        headers=bearer(provider.token("admin"))).json()
    assert {r["action"] for r in mine} == {"query", "denied"}


def test_share_links_are_recorded_without_their_token(secured) -> None:
    server, provider, key = secured
    study = stored_study(server, key, "AUD-SHARE")
    writer = provider.token("writer-a")
    shared = requests.post(f"{server.url}/studies/{study}/share", headers=bearer(writer),
                           timeout=30)
    assert shared.status_code in (200, 201), shared.text
    share = shared.json()
    record = audit_of(server, provider, shared)
    assert (record["action"], record["operation"], record["client_id"]) == (
        "update", "update", "writer-a")
    by_query = requests.get(f"{server.url}/studies/{study}/metadata",
                            params={"token": share["token"]}, timeout=30)
    assert by_query.status_code == 200
    record = audit_of(server, provider, by_query)
    assert (record["action"], record["user_kind"], record["user"]) == (
        "read", "share", share["id"])
    other = requests.get(f"{server.url}/studies/{stored_study(server, key, 'AUD-SHARE-2')}"
                         "/metadata", headers=bearer(share["token"]), timeout=30)
    assert other.status_code == 404
    assert audit_of(server, provider, other)["action"] == "denied"

    engine = create_engine(server.database_url or
                           f"sqlite:///{server.data_dir / 'index.sqlite'}")
    with engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM audit_trail")).all())
    engine.dispose()
    for secret in (share["token"], key, writer):
        assert secret not in dump
