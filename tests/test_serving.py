"""`dicomweb serve` start-up: one-line errors, nothing created by a failed start, the banner
only once the socket is bound; SIGTERM lets in-flight STOW requests finish within the grace
period, and fails the rest cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import free_port, start_server
from factory import image, multipart, new_uid, to_bytes

from dicomweb.serving import one_line


def serve(cwd: Path, *options: str, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    return subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", "serve", *options],
        cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )


def assert_failed_in_one_line(result: subprocess.CompletedProcess[str], cwd: Path,
                              *says: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""  # no banner
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in says:
        assert text in lines[0]
    assert list(cwd.iterdir()) == []  # nothing created: no dicomweb-data, no blobs


def test_port_in_use_is_one_line_without_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--port", str(port))
    assert_failed_in_one_line(result, tmp_path, f"cannot listen on 127.0.0.1:{port}",
                              "Address already in use")


def test_unreachable_database_names_the_url_without_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://dicom:s3cret@127.0.0.1:{free_port()}/pacs"
    result = serve(tmp_path, "--database-url", url)
    assert_failed_in_one_line(
        result, tmp_path, "cannot connect to the database postgresql+psycopg://dicom:***@"
        "127.0.0.1:", "/pacs", "Connection refused")
    assert "s3cret" not in result.stderr


def test_unparseable_database_url(tmp_path: Path) -> None:
    result = serve(tmp_path, env={"DICOMWEB_DATABASE_URL": "not a url"})
    assert_failed_in_one_line(result, tmp_path, "DICOMWEB_DATABASE_URL", "not a SQLAlchemy URL")


def test_bad_setting_value(tmp_path: Path) -> None:
    result = serve(tmp_path, env={"DICOMWEB_DUPLICATES": "maybe"})
    assert result.returncode == 2
    assert_failed_in_one_line(result, tmp_path,
                              "DICOMWEB_DUPLICATES='maybe': must be one of reject, overwrite")


def test_data_folder_that_cannot_be_made(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "a-file").write_text("")
    result = serve(cwd, "--data", str(tmp_path / "a-file" / "data"))
    assert_failed_in_one_line(result, cwd, "data folder", "a-file is not a folder")


def test_data_folder_that_cannot_be_written(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = "/proc/dicomweb-data"  # root may write anywhere except such filesystems
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "data")
    result = serve(tmp_path, "--data", target)
    assert_failed_in_one_line(result, tmp_path, f"data folder {target} cannot be written")


def test_one_line_joins_a_drivers_lines() -> None:
    error = OSError("connection failed: refused\n\tIs the server running?")
    assert one_line(error) == "connection failed: refused. Is the server running?"


def test_banner_comes_once_the_socket_listens(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomweb.cli", "serve", "--port", str(port)],
        cwd=tmp_path, env=clean, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        first_line = process.stdout.readline()
        assert first_line.strip() == f"DICOMweb service at http://127.0.0.1:{port}/dicomweb"
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))  # already ours when the banner is out
        assert (tmp_path / "dicomweb-data" / "blobs").is_dir()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


# --- graceful shutdown -------------------------------------------------------------------


def slow_body(body: bytes, seconds: float) -> Iterator[bytes]:
    """The body in small pieces over `seconds`: an upload still in flight."""
    pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)]
    for piece in pieces:
        time.sleep(seconds / len(pieces))
        yield piece


def post_slowly(url: str, datasets: list, seconds: float, outcome: dict) -> None:
    body, content_type = multipart([to_bytes(ds) for ds in datasets])
    try:
        response = requests.post(f"{url}/studies", data=slow_body(body, seconds),
                                 headers={"Content-Type": content_type}, timeout=120)
        outcome["status"] = response.status_code
    except requests.RequestException as exc:
        outcome["error"] = exc


def sigterm_during_upload(server, datasets, seconds: float) -> tuple[dict, float]:
    outcome: dict = {}
    upload = threading.Thread(target=post_slowly, args=(server.url, datasets, seconds, outcome))
    upload.start()
    time.sleep(seconds / 3)  # the request is in flight, its body still arriving
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=60)
    exited_after = time.monotonic() - stopped_at
    upload.join(timeout=120)
    return outcome, exited_after


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path, backend, workers: int) -> None:
    server = start_server(tmp_path / "data", backend, workers=workers)
    study = new_uid()
    datasets = [image(study=study, instance_number=i) for i in range(40)]
    outcome, _ = sigterm_during_upload(server, datasets, seconds=3)
    assert outcome == {"status": 200}
    assert server.process.returncode == 0
    assert "Shutting down" in server.log()

    restarted = start_server(tmp_path / "data", backend)
    try:
        found = requests.get(f"{restarted.url}/studies?StudyInstanceUID={study}", timeout=30)
        assert found.json()[0]["00201208"]["Value"] == [40]
    finally:
        restarted.process.terminate()
        restarted.process.wait(timeout=30)


def test_an_upload_longer_than_the_grace_period_fails_cleanly(tmp_path: Path, backend) -> None:
    server = start_server(tmp_path / "data", backend, extra=["--shutdown-grace-seconds", "1"])
    study = new_uid()
    datasets = [image(study=study, instance_number=i) for i in range(40)]
    outcome, exited_after = sigterm_during_upload(server, datasets, seconds=10)
    assert exited_after < 5  # the grace period (1 s), not the upload (10 s), bounds the stop
    assert outcome == {"status": 503}  # told to send again; never a 200 for a cut-off upload
    log = server.log()
    assert "POST /dicomweb/studies cancelled: shutdown grace period over" in log
    assert "Traceback" not in log

    # Whatever arrived is whole or absent: every indexed instance is retrievable as sent.
    restarted = start_server(tmp_path / "data", backend)
    try:
        found = requests.get(f"{restarted.url}/studies/{study}/instances", timeout=30)
        stored = found.json() if found.status_code == 200 else []
        by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
        for item in stored:
            sop = item["00080018"]["Value"][0]
            series = item["0020000E"]["Value"][0]
            response = requests.get(
                f"{restarted.url}/studies/{study}/series/{series}/instances/{sop}",
                headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
            assert response.content == to_bytes(by_uid[sop])
    finally:
        restarted.process.terminate()
        restarted.process.wait(timeout=30)
