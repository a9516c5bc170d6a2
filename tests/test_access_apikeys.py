"""API keys made with the real CLI (`dicomweb apikey create|list|revoke`), used by a real
server on SQLite and PostgreSQL: Bearer and HTTP Basic, only a hash in the database, revoked and
expired keys refused, labels from the key, and a loopback server that is open until the first
key exists."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import access_setup
import factory
import pytest
import requests
from conftest import Server, start_server, stop_server
from sqlalchemy import create_engine, text

from dicomweb.access.apikeys import KEY_PREFIX


@pytest.fixture(scope="module")
def key_server(own_database, tmp_path_factory) -> Iterator[Server]:
    """Loopback, no issuer, labels: open until the first key is made."""
    server = start_server(tmp_path_factory.mktemp("keys"), own_database,
                          extra=["--study-access", "labels"], env=access_setup.NO_CACHE)
    yield server
    stop_server(server)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dicomweb.cli", *args, "--data", str(server.data_dir)]
    if server.database_url:
        command += ["--database-url", server.database_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def create(server: Server, name: str, scopes: str, *more: str) -> str:
    done = cli(server, "apikey", "create", "--name", name, "--scopes", scopes, *more)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def engine_of(server: Server):  # type: ignore[no-untyped-def]
    url = server.database_url or f"sqlite:///{Path(server.data_dir, 'index.sqlite').resolve()}"
    return create_engine(url)


def stow(server: Server, key: str, study: str) -> requests.Response:
    body, content_type = factory.multipart([factory.to_bytes(factory.image(study=study))])
    return requests.post(f"{server.url}/studies", data=body, timeout=60,
                         headers={**bearer(key), "Content-Type": content_type})


def test_open_until_the_first_key(key_server) -> None:
    assert requests.get(f"{key_server.url}/studies", timeout=30).status_code in (200, 204)
    create(key_server, "first", "dicomweb:read")
    anonymous = requests.get(f"{key_server.url}/studies", timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


def test_keys_work_as_bearer_and_basic(key_server) -> None:
    key = create(key_server, "scanner", "dicomweb:write,dicomweb:read", "--labels", "CT1,MR2")
    study = factory.new_uid()
    assert stow(key_server, key, study).status_code == 200
    url = f"{key_server.url}/studies/{study}/metadata"
    assert requests.get(url, headers=bearer(key), timeout=30).status_code == 200
    assert requests.get(url, auth=("anyone", key), timeout=30).status_code == 200
    assert requests.get(url, auth=("modality", key + "x"), timeout=30).status_code == 401
    # Keys are long-lived: never accepted from the URL.
    in_url = requests.get(url, params={"token": key}, timeout=30)
    assert in_url.status_code == 401 and "header" in in_url.json()["error"]["message"]
    # The study got the key's labels; another key with other labels does not see it.
    admin = create(key_server, "admin", "dicomweb:admin")
    labels = requests.get(f"{key_server.url}/studies/{study}/labels", headers=bearer(admin),
                          timeout=30)
    assert labels.json()["labels"] == ["CT1", "MR2"]
    other = create(key_server, "reader-x", "dicomweb:read", "--labels", "X")
    assert requests.get(url, headers=bearer(other), timeout=30).status_code == 404
    # Write but no delete.
    assert requests.delete(f"{key_server.url}/studies/{study}", headers=bearer(key),
                           timeout=30).status_code == 403


def test_only_a_hash_is_stored(key_server) -> None:
    key = create(key_server, "hashed", "dicomweb:read")
    with engine_of(key_server).connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert all(key not in str(dict(row).values()) for row in rows)
    assert hashlib.sha256(key.encode()).hexdigest() in {row["key_hash"] for row in rows}
    listing = cli(key_server, "apikey", "list")
    assert listing.returncode == 0 and "hashed\tscopes=dicomweb:read" in listing.stdout
    assert KEY_PREFIX not in listing.stdout


def test_revoked_and_expired_keys_are_refused(key_server) -> None:
    url = f"{key_server.url}/studies"
    key = create(key_server, "to-revoke", "dicomweb:read")
    assert requests.get(url, headers=bearer(key), timeout=30).status_code in (200, 204)
    assert cli(key_server, "apikey", "revoke", "to-revoke").returncode == 0
    revoked = requests.get(url, headers=bearer(key), timeout=30)
    assert revoked.status_code == 401 and 'error="invalid_token"' in revoked.headers[
        "WWW-Authenticate"]
    assert cli(key_server, "apikey", "revoke", "to-revoke").returncode == 1
    expiring = create(key_server, "short", "dicomweb:read", "--expires-days", "1")
    assert requests.get(url, headers=bearer(expiring), timeout=30).status_code in (200, 204)
    with engine_of(key_server).begin() as connection:  # a day later
        connection.execute(text("UPDATE api_keys SET expires_at = :t WHERE name = 'short'"),
                           {"t": int(time.time()) - 1})
    expired = requests.get(url, headers=bearer(expiring), timeout=30)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_cli_refuses_bad_requests(key_server) -> None:
    assert cli(key_server, "apikey", "create", "--name", "x", "--scopes", "read").returncode == 2
    assert cli(key_server, "apikey", "create", "--name", "bad name",
               "--scopes", "dicomweb:read").returncode == 2
    create(key_server, "twice", "dicomweb:read")
    again = cli(key_server, "apikey", "create", "--name", "twice", "--scopes", "dicomweb:read")
    assert again.returncode == 2 and "exists" in again.stderr


def test_revocation_delay_is_the_cache_time(own_database, tmp_path) -> None:
    """With the default cache, a revoked key is refused within credential_cache_seconds."""
    server = start_server(tmp_path / "cached", None,
                          env={"DICOMWEB_CREDENTIAL_CACHE_SECONDS": "2"})
    try:
        key = create(server, "cached", "dicomweb:read")
        url = f"{server.url}/studies"
        assert requests.get(url, headers=bearer(key), timeout=30).status_code in (200, 204)
        assert cli(server, "apikey", "revoke", "cached").returncode == 0
        deadline = time.time() + 4
        while requests.get(url, headers=bearer(key), timeout=30).status_code != 401:
            assert time.time() < deadline, "the revoked key is still accepted"
            time.sleep(0.2)
    finally:
        stop_server(server)


def test_no_key_in_the_log(key_server) -> None:
    key = create(key_server, "logged", "dicomweb:read")
    before = len(key_server.log())
    requests.get(f"{key_server.url}/studies", headers=bearer(key), timeout=30)
    requests.get(f"{key_server.url}/studies", auth=("u", key), timeout=30)
    requests.get(f"{key_server.url}/studies", params={"token": key}, timeout=30)
    assert key not in key_server.log_once_it_holds('"path":"/dicomweb/studies"', before, times=3)
