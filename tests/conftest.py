"""Fixtures: a real `dicomweb serve` on 127.0.0.1, on SQLite and on PostgreSQL.

PostgreSQL runs when DICOMWEB_TEST_POSTGRES_URL names a server database URL (for example
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); each test session creates its own
database there and drops it afterwards. Without it, the PostgreSQL half is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import factory
import pytest
import requests
from oidc import OidcProvider, start_provider

POSTGRES_ENV = "DICOMWEB_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str  # the DICOMweb root, e.g. http://127.0.0.1:PORT/dicomweb
    origin: str
    data_dir: Path
    database_url: str | None
    process: subprocess.Popen[bytes]
    log_path: Path

    def stow(self, *datasets, study: str | None = None) -> requests.Response:
        body, content_type = factory.multipart([factory.to_bytes(ds) for ds in datasets])
        target = f"{self.url}/studies" + (f"/{study}" if study else "")
        return requests.post(target, data=body, headers={"Content-Type": content_type}, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_once_it_holds(self, text: str, since: int = 0, times: int = 1,
                          timeout: float = 10.0) -> str:
        """The log once `text` is in it `times` times after its first `since` characters: the
        access line of a request is written after its response is sent, so a test reading at
        once can race the server."""
        deadline = time.monotonic() + timeout
        while (log := self.log())[since:].count(text) < times:
            assert time.monotonic() < deadline, f"{text!r} not {times} times in the log"
            time.sleep(0.05)
        return log


def start_server(
    data_dir: Path,
    database_url: str | None,
    *,
    workers: int = 1,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    memory_limit_bytes: int | None = None,
) -> Server:
    """`env` adds DICOMWEB_* settings; `memory_limit_bytes` caps the server's address space
    (RLIMIT_AS), so a test of a memory bound fails with an error instead of eating the host."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "dicomweb.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data",
        str(data_dir),
        "--workers",
        str(workers),
    ]
    if database_url:
        command += ["--database-url", database_url]
    command += extra or []
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    environment.update(env or {})
    log_file = log_path.open("wb")

    def limit_memory() -> None:
        if memory_limit_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env=environment, preexec_fn=limit_memory)
    origin = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            if requests.get(f"{origin}/readyz", timeout=1).status_code == 200:
                return Server(
                    f"{origin}/dicomweb", origin, data_dir, database_url, process, log_path
                )
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start: {log_path.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(
            f"PostgreSQL tests skipped: set {POSTGRES_ENV} (e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres) to run them"
        )
    import psycopg

    name = f"dicomweb_test_{uuid.uuid4().hex[:10]}"
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def own_database(backend: str | None) -> Iterator[str | None]:
    """A database of the test module's own, for servers whose state must not leak into the
    session's shared one (API keys turn authentication on; tampered audit chains): None on
    SQLite (a server's data folder is its own), a fresh PostgreSQL database otherwise."""
    if backend is None:
        yield None
        return
    import psycopg

    admin = os.environ[POSTGRES_ENV].replace("postgresql+psycopg://", "postgresql://")
    name = f"dicomweb_own_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{backend.rpartition('/')[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The database URL of a backend: None for the embedded SQLite default."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_database")


@dataclass
class Kept:
    value: Any
    stop: Callable[[], None]


@pytest.fixture(scope="session")
def kept_servers() -> Iterator[dict[tuple[str, str | None], Kept]]:
    """Servers kept for the whole session, by kind and backend. pytest tears a fixture that
    depends on the parametrized `backend` down whenever the parameter changes (which
    pytest-xdist's order of modules makes it do often), and the next one would meet the
    previous one's database with blobs in another folder: `server` and `dimse_server` take
    theirs from here, so each starts once per backend."""
    kept: dict[tuple[str, str | None], Kept] = {}
    yield kept
    for entry in reversed(list(kept.values())):
        entry.stop()


def kept_server(kept: dict[tuple[str, str | None], Kept], kind: str, backend: str | None,
                start: Callable[[], Kept]) -> Any:
    if (kind, backend) not in kept:
        kept[kind, backend] = start()
    return kept[kind, backend].value


def backend_name(backend: str | None) -> str:
    return "sqlite" if backend is None else "postgresql"


@pytest.fixture(scope="session")
def server(backend: str | None, kept_servers: dict, tmp_path_factory: pytest.TempPathFactory
           ) -> Server:
    def start() -> Kept:
        running = start_server(tmp_path_factory.mktemp(backend_name(backend)), backend)
        return Kept(running, lambda: stop_server(running))

    return kept_server(kept_servers, "http", backend, start)


@pytest.fixture
def stored_study(server: Server) -> dict:
    """A fresh study of two series (CT 3 slices, MR 2 slices) stored on the server."""
    study = factory.new_uid()
    patient_id = "PID-" + uuid.uuid4().hex[:8]
    ct_series, mr_series = factory.new_uid(), factory.new_uid()
    datasets = [
        factory.image(
            study=study,
            series=ct_series,
            patient_id=patient_id,
            instance_number=i,
            position_z=float(i),
        )
        for i in (1, 2, 3)
    ] + [
        factory.image(
            study=study,
            series=mr_series,
            patient_id=patient_id,
            modality="MR",
            series_number=2,
            instance_number=i,
            frames=2,
        )
        for i in (1, 2)
    ]
    response = server.stow(*datasets)
    assert response.status_code == 200, response.text
    return {
        "study": study,
        "patient_id": patient_id,
        "ct": ct_series,
        "mr": mr_series,
        "datasets": datasets,
    }


@dataclass
class DimseServer:
    """`dicomweb serve --dimse-port` with peers and destinations, and dcmtk's storescp as
    the C-MOVE destination DEST."""

    http: Server
    port: int
    destination: object  # dcmtk.StoreSCP
    report_port: int  # where COMMITTER's Storage Commitment reports go


#: Calling AE titles of the DIMSE tests and what each may do.
DIMSE_PEERS = "TEST=read+write,READER=read,WRITER=write,LABELLED=read/trial-a,COMMITTER=write"


@pytest.fixture(scope="session")
def dimse_server(backend: str | None, kept_servers: dict,
                 tmp_path_factory: pytest.TempPathFactory) -> DimseServer:
    return kept_server(kept_servers, "dimse", backend, lambda: start_dimse_server(
        backend, tmp_path_factory.mktemp("dimse-" + backend_name(backend))))


def start_dimse_server(backend: str | None, folder: Path) -> Kept:
    import dcmtk

    destination = dcmtk.start_storescp("DEST", free_port(), folder / "dest")
    dimse_port, report_port, closed_port = free_port(), free_port(), free_port()
    env = {
        "DICOMWEB_DIMSE_DESTINATIONS": f"DEST=127.0.0.1:{destination.port},"
        f"DOWN=127.0.0.1:{closed_port},COMMITTER=127.0.0.1:{report_port}",
        "DICOMWEB_DIMSE_PEERS": DIMSE_PEERS,
    }
    try:
        running = start_server(
            folder / "data", backend, extra=["--dimse-port", str(dimse_port)], env=env
        )
    except BaseException:
        destination.stop()
        raise

    def stop() -> None:
        stop_server(running)
        destination.stop()

    return Kept(DimseServer(running, dimse_port, destination, report_port), stop)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A real OpenID provider (npm's oidc-provider) on 127.0.0.1 with the clients and users of
    tests/oidc.py; tests that rotate its keys should start their own with `start_provider`."""
    provider = start_provider(tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.stop()
