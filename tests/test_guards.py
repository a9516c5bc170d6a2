"""Limits and faults end to end, on SQLite and PostgreSQL: 413 beyond the body and part
limits, no 500 and no internals in any body, the keep-alive connection kept after errors, no
temp file left by a failed or abandoned upload."""

from __future__ import annotations

import http.client
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
import uvicorn
from conftest import Server, free_port, start_server, stop_server
from factory import FAILED, image, multipart, stow_items, to_bytes
from starlette.routing import Route

from dicomweb.app import create_app
from dicomweb.config import Settings

MAX_UPLOAD = 1 << 20
LIMITS = {
    "DICOMWEB_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    "DICOMWEB_MAX_PARTS": "3",
    "DICOMWEB_QIDO_MAX_RESULTS": "2",
}
#: What no response body may hold: exception class names, tracebacks, SQL, server paths.
INTERNALS = re.compile(
    r"\b\w+(Error|Exception)\b|Traceback|\bSELECT\b|\bFROM\b|sqlalchemy|psycopg|"
    r"/tmp/|/work/|/home/|site-packages|\.py\b"
)


@pytest.fixture(scope="module")
def limited(backend: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("limited"), backend, env=LIMITS)
    yield running
    stop_server(running)


def temp_files(server: Server) -> list[Path]:
    return list((server.data_dir / "blobs" / ".tmp").glob("*.part"))


def raw_request(server: Server, head: bytes, body: bytes = b"") -> bytes:
    port = int(server.origin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_declared_body_beyond_the_limit_is_413_before_reading(limited: Server) -> None:
    head = (b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
            b"Content-Length: %d\r\n\r\n" % (10 * MAX_UPLOAD))
    answer = raw_request(limited, head)  # no body sent: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert b"DICOMWEB_MAX_UPLOAD_BYTES" in answer


def test_chunked_body_beyond_the_limit_is_413(limited: Server) -> None:
    body, content_type = multipart([b"\x00" * (MAX_UPLOAD + 65536)])

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 32768):
            yield body[start : start + 32768]

    response = requests.post(f"{limited.url}/studies", data=chunks(),
                             headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 413
    assert "DICOMWEB_MAX_UPLOAD_BYTES" in response.json()["error"]["message"]
    assert_no_temp_files(limited)


def test_more_parts_than_the_limit_is_413_and_nothing_is_stored(limited: Server) -> None:
    datasets = [image() for _ in range(4)]
    body, content_type = multipart([to_bytes(ds) for ds in datasets])
    response = requests.post(f"{limited.url}/studies", data=body,
                             headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 413
    assert "DICOMWEB_MAX_PARTS" in response.json()["error"]["message"]
    found = requests.get(f"{limited.url}/instances",
                         params={"SOPInstanceUID": datasets[0].SOPInstanceUID}, timeout=30)
    assert found.status_code == 204
    assert_no_temp_files(limited)


def test_qido_max_results_is_applied_with_a_warning(limited: Server) -> None:
    study = image().StudyInstanceUID
    assert limited.stow(*[image(study=study) for _ in range(3)]).status_code == 200
    response = requests.get(f"{limited.url}/studies/{study}/instances", params={"limit": 100},
                            timeout=30)
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert "additional results" in response.headers["Warning"]


@pytest.mark.parametrize("query", [
    "limit=9223372036854775808", "offset=9223372036854775808", "limit=99999999999999999999999",
    "offset=-1", "limit=0", "limit=%2B5", "limit=1e3",
])
def test_out_of_range_limit_and_offset_are_400(server: Server, query: str) -> None:
    response = requests.get(f"{server.url}/studies?{query}", timeout=30)
    assert response.status_code == 400, response.text
    assert not INTERNALS.search(response.text)


def test_largest_limit_and_offset_are_served(server: Server) -> None:
    big = 2**63 - 1
    assert requests.get(f"{server.url}/studies?limit={big}", timeout=30).status_code in (200, 204)
    assert requests.get(f"{server.url}/studies?offset={big}", timeout=30).status_code == 204


def test_failure_reasons_are_words_without_internals(server: Server) -> None:
    good = image()
    raw = to_bytes(good)
    uy = raw.replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00UY", 1)
    bad_parts = [
        b"\x00" * 300, b"GIF89a" + b"\x01" * 500, raw[:200], raw[:-300], uy,
        raw[:132] + b"\xff" * 400, raw[:400],
    ]
    body, content_type = multipart([*bad_parts, raw])
    response = requests.post(f"{server.url}/studies", data=body,
                             headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 202, response.text
    failed = stow_items(response.json(), FAILED)
    assert len(failed) == len(bad_parts)
    for item in failed:
        comment = item["00000902"]["Value"][0]
        assert comment and not INTERNALS.search(comment), comment


def assert_no_temp_files(server: Server, within_s: float = 5.0) -> None:
    deadline = time.time() + within_s
    while temp_files(server) and time.time() < deadline:
        time.sleep(0.1)
    assert temp_files(server) == []


def test_malformed_later_part_leaves_no_temp_file(server: Server) -> None:
    body, content_type = multipart([to_bytes(image()), b"x" * 100_000])
    boundary = content_type.rsplit("boundary=", 1)[1]
    broken = body[: len(body) // 2] + f"\r\n--{boundary}\r\nno colon here\r\n\r\n".encode()
    response = requests.post(f"{server.url}/studies", data=broken,
                             headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 400
    assert_no_temp_files(server)


def test_client_disconnect_mid_upload_leaves_no_temp_file(server: Server) -> None:
    body, content_type = multipart([to_bytes(image()), to_bytes(image(rows=512, columns=512))])
    port = int(server.origin.rsplit(":", 1)[1])
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) - 100_000])
        time.sleep(0.5)  # the first part is on disk, the second being written
    assert_no_temp_files(server)
    assert requests.get(f"{server.origin}/healthz", timeout=10).status_code == 200


def test_connection_is_reused_after_error_answers(server: Server) -> None:
    port = int(server.origin.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()
    first_socket = connection.sock
    for method, path, body in [
        ("GET", "/dicomweb/studies?limit=9223372036854775808", None),
        ("GET", "/dicomweb/studies/1.2.3/metadata", None),
        ("POST", "/dicomweb/studies", b"x" * 5000),
        ("GET", "/healthz", None),
    ]:
        connection.request(method, path, body=body,
                           headers={"Content-Type": "text/plain"} if body else {})
        response = connection.getresponse()
        response.read()
        assert response.status < 500
        assert connection.sock is first_socket
    connection.close()


# --- unexpected exceptions, on a real uvicorn ---------------------------------------------


async def boom(request: object) -> None:
    raise RuntimeError("secret detail at /srv/secret.py line 1")


@pytest.fixture
def failing_server(tmp_path: Path) -> Iterator[int]:
    app = create_app(Settings(data_dir=tmp_path / "data").normalised())
    app.router.routes.insert(0, Route("/boom", boom))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def test_500_says_only_internal_error_and_keeps_the_connection(failing_server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", failing_server, timeout=10)
    connection.request("GET", "/boom")
    response = connection.getresponse()
    body = orjson.loads(response.read())
    assert response.status == 500
    assert body["error"]["message"] == "internal error"
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]
    assert "secret" not in str(body)
    first_socket = connection.sock
    connection.request("GET", "/healthz")  # formerly reset: uvicorn closed the connection
    assert connection.getresponse().status == 200
    assert connection.sock is first_socket
    connection.close()


def test_uids_of_dot_dot_are_stored_inside_the_blob_folder(server: Server) -> None:
    ds = image(study="..", series="..")
    response = server.stow(ds)
    assert response.status_code == 200, response.text
    found = requests.get(f"{server.url}/instances",
                         params={"SOPInstanceUID": ds.SOPInstanceUID}, timeout=30)
    assert found.status_code == 200
    assert found.json()[0]["0020000D"]["Value"] == [".."]  # indexed as it is
    # Formerly the key was `../../<sop>.<random>.dcm`: a file beside the data folder.
    assert list(server.data_dir.parent.glob(f"{ds.SOPInstanceUID}*")) == []
    blobs = (server.data_dir / "blobs").resolve()
    assert all(p.resolve().is_relative_to(blobs) for p in server.data_dir.rglob("*.dcm"))


def test_orphan_temp_files_are_swept_at_start_up(tmp_path: Path, backend: str | None) -> None:
    data = tmp_path / "data"
    (data / "blobs" / ".tmp").mkdir(parents=True)
    orphan = data / "blobs" / ".tmp" / "left-by-kill-9.part"
    orphan.write_bytes(b"partial upload")
    past = time.time() - 60  # a minute old: formerly kept for a day
    os.utime(orphan, (past, past))
    running = start_server(data, backend)
    try:
        assert not orphan.exists()
    finally:
        stop_server(running)


def test_orphans_are_swept_while_serving_and_a_live_upload_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic sweep (once a minute; here every 0.2 s) removes a temp file whose writer
    died (its lock is free) and keeps one another worker is still writing (locked)."""
    import fcntl

    from dicomweb import app as app_module

    monkeypatch.setattr(app_module, "SWEEP_INTERVAL_S", 0.2)
    app = create_app(Settings(data_dir=tmp_path / "data").normalised())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        temp = tmp_path / "data" / "blobs" / ".tmp"
        temp.mkdir(parents=True, exist_ok=True)
        orphan, live = temp / "dead-writer.part", temp / "other-worker.part"
        orphan.write_bytes(b"left by kill -9")
        with live.open("wb") as writing:
            fcntl.flock(writing.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            writing.write(b"still arriving")
            past = time.time() - 60  # older than the 10 s a fresh temp file is left alone
            for path in (orphan, live):
                os.utime(path, (past, past))
            deadline = time.time() + 10
            while orphan.exists() and time.time() < deadline:
                time.sleep(0.1)
            assert not orphan.exists()
            assert live.exists()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
