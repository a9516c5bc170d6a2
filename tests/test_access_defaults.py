"""Safe defaults: a non-loopback server refuses to start without authentication, the opt-out
warns at every start, CORS follows whether authentication is on, TLS from the server itself,
and settings that would weaken access control are refused (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import access_setup
import pytest
import requests
from access_setup import Caller
from conftest import Server, free_port, start_server, stop_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dicomweb.access.apikeys import create_key
from dicomweb.access.authenticate import is_loopback
from dicomweb.access.cli import startup_refusal
from dicomweb.config import ConfigError, Settings
from dicomweb.store.repository import Store

auth_server = access_setup.auth_server  # fixture
EVIL = "http://evil.example"


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    return subprocess.run([sys.executable, "-m", "dicomweb.cli", "serve", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_public_address_without_authentication_refuses_to_start(tmp_path, backend) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: were the check broken, binding would
    # fail instead of exposing anything.
    args = ["--host", "192.0.2.1", "--port", str(free_port()), "--data", str(tmp_path)]
    if backend:
        args += ["--database-url", backend]
    done = serve(*args)
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: refusing to serve 192.0.2.1")
    assert "--oidc-issuer" in message and "apikey create" in message
    assert "--allow-anonymous" in message


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("::1", True),
                                           ("localhost", True), ("127.0.0.2", True),
                                           ("0.0.0.0", False), ("::", False),
                                           ("10.1.2.3", False), ("pacs.example.org", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_what_counts_as_authentication(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0")
    store = Store(settings)
    try:
        store.create_schema()
        assert startup_refusal(settings, store) is not None
        allowed = Settings(data_dir=tmp_path, host="0.0.0.0", allow_anonymous=True)
        assert startup_refusal(allowed, store) is None
        issuer = Settings(data_dir=tmp_path, host="0.0.0.0", oidc_issuer="https://idp",
                          oidc_audience="dicomweb")
        assert startup_refusal(issuer, store) is None
        create_key(store.engine, "gateway", "dicomweb:write")
        assert startup_refusal(settings, store) is None
        assert startup_refusal(Settings(data_dir=tmp_path), store) is None
    finally:
        store.close()


def test_settings_that_weaken_access_are_refused() -> None:
    with pytest.raises(ConfigError, match="DICOMWEB_OIDC_AUDIENCE"):
        Settings.from_env({"DICOMWEB_OIDC_ISSUER": "https://idp.example"})
    with pytest.raises(ConfigError, match="--ssl-keyfile"):
        Settings.from_env({"DICOMWEB_SSL_CERTFILE": "/tmp/cert.pem"})
    with pytest.raises(ConfigError, match="study_access|STUDY_ACCESS"):
        Settings.from_env({"DICOMWEB_STUDY_ACCESS": "some"})
    assert Settings.from_env({"DICOMWEB_ALLOW_ANONYMOUS": "1"}).allow_anonymous


def test_allow_anonymous_warns_and_stays_open(own_database, tmp_path) -> None:
    server = start_server(tmp_path / "anon", own_database, extra=["--allow-anonymous"],
                          env=access_setup.NO_CACHE)
    try:
        store = Store(Settings(data_dir=server.data_dir, database_url=own_database))
        create_key(store.engine, "some-key", "dicomweb:read")
        store.close()
        assert requests.get(f"{server.url}/studies", timeout=30).status_code in (200, 204)
        assert "anonymous access is allowed (--allow-anonymous)" in server.log()
    finally:
        stop_server(server)


def preflight(url: str, method: str, origin: str = EVIL,
              headers: str = "authorization") -> requests.Response:
    return requests.options(url, timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def test_an_open_server_lets_other_origins_read_only(server) -> None:
    url = f"{server.url}/studies"
    assert preflight(url, "GET", headers="accept").status_code == 200
    for method in ("POST", "DELETE", "PUT"):
        refused = preflight(url, method, headers="content-type")
        assert refused.status_code == 400, method
        assert method not in refused.headers.get("Access-Control-Allow-Methods", "")
    read = requests.get(url, headers={"Origin": EVIL}, timeout=30)
    assert read.headers["Access-Control-Allow-Origin"] == "*"


def test_with_authentication_any_origin_may_send_tokens(auth_server, oidc_provider) -> None:
    url = f"{auth_server.url}/studies"
    for method in ("GET", "POST", "DELETE", "PUT"):
        allowed = preflight(url, method)
        assert allowed.status_code == 200, method
        assert allowed.headers["Access-Control-Allow-Origin"] == "*"
        assert method in allowed.headers["Access-Control-Allow-Methods"]
        assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in allowed.headers  # no cookies
    reader = Caller(oidc_provider, "reader-a")
    answer = requests.get(url, headers={**reader.headers, "Origin": EVIL}, timeout=30)
    assert answer.status_code in (200, 204)
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


def test_listed_origins_get_every_method(tmp_path) -> None:
    server = start_server(tmp_path / "cors", None,
                          env={"DICOMWEB_CORS_ORIGINS": "http://viewer.example"})
    try:
        url = f"{server.url}/studies"
        allowed = preflight(url, "DELETE", origin="http://viewer.example")
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
        assert preflight(url, "GET", origin=EVIL).status_code == 400
    finally:
        stop_server(server)


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomweb.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--data", str(tmp_path / "data"), "--ssl-certfile", str(cert),
         "--ssl-keyfile", str(key)], stdout=log, stderr=subprocess.STDOUT, env=env)
    origin = f"https://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if requests.get(f"{origin}/readyz", verify=cert, timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield origin, cert, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_tls_from_the_server_itself(tls_server) -> None:
    origin, cert, _ = tls_server
    assert requests.get(f"{origin}/dicomweb/studies", verify=cert, timeout=30).status_code \
        in (200, 204)
    with pytest.raises(requests.ConnectionError):
        requests.get(origin.replace("https", "http") + "/readyz", timeout=5)


def test_server_log_holds_no_authorization(auth_server: Server, oidc_provider) -> None:
    reader = Caller(oidc_provider, "reader-a")
    before = len(auth_server.log())
    requests.get(f"{auth_server.url}/studies?token={reader.token}", timeout=30)
    requests.get(f"{auth_server.url}/studies/1.2.3.4/metadata", headers=reader.headers,
                 timeout=30)
    log = auth_server.log_once_it_holds("/studies/1.2.3.4/metadata", before)
    assert reader.token not in log and "Bearer ey" not in log


def test_the_docker_image_and_compose_file_are_never_anonymous() -> None:
    docker = Path(__file__).resolve().parent.parent / "docker"
    compose = (docker / "compose.yaml").read_text()
    dockerfile = (docker / "Dockerfile").read_text()
    assert "ALLOW_ANONYMOUS" not in compose and "allow-anonymous" not in compose
    assert "ALLOW_ANONYMOUS" not in dockerfile and "allow-anonymous" not in dockerfile
    # Both server services take the provider settings, which compose requires (`:?`).
    assert compose.count("<<: *authentication") == 2
    assert "${DICOMWEB_OIDC_ISSUER:?" in compose and "${DICOMWEB_OIDC_AUDIENCE:?" in compose
    assert "DICOMWEB_HOST=0.0.0.0" in dockerfile  # so `serve` refuses to start without auth
