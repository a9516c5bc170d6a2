"""`dicomweb serve --dimse-port`: the DIMSE service starts with serve (one process, whatever
the number of workers), refuses to start when it must, and stops with serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import factory
import pytest
import requests
from conftest import free_port, start_server, stop_server
from dcmtk import peer, requires_dcmtk, run, statuses


def serve_fails(tmp_path, *options: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    command = [sys.executable, "-m", "dicomweb.cli", "serve", "--data", str(tmp_path / "data"),
               "--port", str(free_port()), *options]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env=clean | (env or {}))
    return done.returncode, done.stderr


def test_no_peers_on_a_non_loopback_bind_refuses_to_start(tmp_path) -> None:
    code, stderr = serve_fails(tmp_path, "--host", "0.0.0.0", "--dimse-port", str(free_port()))
    assert code == 2
    assert stderr.startswith("error: DICOMWEB_DIMSE_PEERS is empty")
    assert len(stderr.strip().splitlines()) == 1


def test_bad_peers_refuse_to_start(tmp_path) -> None:
    code, stderr = serve_fails(tmp_path, "--dimse-port", str(free_port()),
                               env={"DICOMWEB_DIMSE_PEERS": "CT=fly"})
    assert code == 2 and "unknown scope 'fly'" in stderr


def test_a_port_in_use_refuses_to_start(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = serve_fails(tmp_path, "--dimse-port", str(port))
    assert code == 2
    assert f"--dimse-port {port}: cannot listen on 127.0.0.1:{port}" in stderr


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@requires_dcmtk
@pytest.mark.parametrize("workers", [1, 2])
def test_one_service_whatever_the_workers_stopped_with_serve(tmp_path, workers) -> None:
    port = free_port()
    server = start_server(tmp_path / "data", None, workers=workers,
                          extra=["--dimse-port", str(port), "--ae-title", "ARCHIVE"])
    try:
        assert f"DIMSE service ARCHIVE at 127.0.0.1:{port}" in server.log()
        assert "Received Echo Response (Success)" in run("echoscu", *peer(port, called="ARCHIVE"))
        ds = factory.image()
        path = tmp_path / "one.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert statuses(run("storescu", *peer(port, called="ARCHIVE"), str(path))) == [0]
        for _ in range(2 * workers):  # whichever worker answers, the instance is there
            found = requests.get(f"{server.url}/studies?StudyInstanceUID={ds.StudyInstanceUID}",
                                 timeout=30)
            assert found.status_code == 200 and len(found.json()) == 1
    finally:
        stop_server(server)
    deadline = time.time() + 10
    while listening(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not listening(port)


def test_off_without_a_port(server) -> None:
    assert "DIMSE service" not in server.log()
