"""`dicomweb serve`, step by step, so a failed start says why in one line and leaves nothing:

1. check: folders writable (probed, nothing left behind), database reachable;
2. bind the listening socket (a port in use is an error here, before any banner);
3. create what the store keeps (schema, folders); then the access layer may still refuse an
   address others reach without authentication (`access_refusal`);
4. print the banner (`banner`), then run uvicorn on the bound socket (one process, or a supervisor
   with `workers` processes sharing it);
5. on SIGTERM or Ctrl-C, stop accepting and give requests in flight `shutdown_grace_seconds`
   to finish; those still running then are cancelled (the store keeps each instance whole or
   absent, so a cancelled STOW leaves nothing half-written).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from dicomweb.config import Settings
from dicomweb.store.database import sqlite_file

#: prometheus-client's multiprocess folder (read when prometheus-client is first imported, so
#: `metrics_folder` sets it before anything imports `dicomweb.metrics`).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds to wait for a database server at start-up.
CONNECT_TIMEOUT_S = 10


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


def display_url(url: str) -> str:
    """A database URL as it may be shown and logged: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def one_line(exc: BaseException) -> str:
    """The cause of a driver or OS error as one line (psycopg's messages span several)."""
    cause = getattr(exc, "orig", None) or exc
    message = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    ended = [line if line[-1] in ".?!:;," else line + "." for line in lines[:-1]]
    return " ".join(ended + lines[-1:])


def check_folder(path: Path, what: str) -> None:
    """`path` can be created or written by this process: probed with a temporary folder in it
    (or in its nearest existing parent), removed at once."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StartupError(f"{what} {path}: {existing} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".dicomweb-probe-", dir=existing)
    except OSError as exc:
        raise StartupError(
            f"{what} {path} cannot be written: {one_line(exc)} ({existing})") from None
    os.rmdir(probe)


def parse_database_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise StartupError(
            "the database URL (DICOMWEB_DATABASE_URL / --database-url) is not a SQLAlchemy URL: "
            "expected dialect+driver://user@host:port/database"
        ) from None


def check_database(url: URL) -> None:
    """Connect once (a database server; SQLite is checked through its folder)."""
    shown = url.render_as_string(hide_password=True)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() in (
        "postgresql", "mysql") else {}
    try:
        engine = create_engine(url, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise StartupError(
            f"database {shown}: unknown dialect or driver ({one_line(exc)})") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise StartupError(f"cannot connect to the database {shown}: {one_line(exc)}") from None
    finally:
        engine.dispose()


def check_store(settings: Settings) -> None:
    """Everything the store needs, checked before anything is created."""
    url = parse_database_url(settings.effective_database_url)
    database_file = sqlite_file(url)
    if database_file is not None:
        in_data = settings.database_url is None
        check_folder(database_file.parent, "data folder" if in_data else "database folder")
    elif url.get_backend_name() != "sqlite":  # in-memory SQLite needs nothing
        check_database(url)
    check_folder(settings.effective_blob_dir,
                 "data folder" if settings.blob_dir is None else "blob folder")


def create_store(settings: Settings) -> None:
    """Schema and folders, once, before any worker starts."""
    from dicomweb.store.repository import Store

    store = Store(settings)
    try:
        store.create_schema()
    except (SQLAlchemyError, OSError) as exc:
        raise StartupError(
            f"cannot create the store in {display_url(settings.effective_database_url)}: "
            f"{one_line(exc)}"
        ) from None
    finally:
        store.close()


def access_refusal(settings: Settings) -> str | None:
    """Why the access layer will not serve this configuration (an address others can reach,
    without authentication), or None."""
    from dicomweb.access.cli import startup_refusal
    from dicomweb.store.repository import Store

    store = Store(settings)
    try:
        return startup_refusal(settings, store)
    finally:
        store.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound: a port in use fails here. uvicorn starts listening on it
    once the application is up (until then connections are refused, as before a start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = one_line(exc)
        in_use = getattr(exc, "errno", None) == errno.EADDRINUSE
        hint = "; another server is using it (choose another --port)" if in_use else ""
        raise StartupError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    sock.set_inheritable(True)  # worker processes accept on it
    return sock


def banner(settings: Settings, port: int) -> list[str]:
    """What `serve` prints once it listens."""
    scheme = "https" if settings.ssl_certfile else "http"
    origin = f"{scheme}://{settings.host}:{port}"
    lines = [f"DICOMweb service at {origin}{settings.root_path}"]
    if settings.viewer:
        lines.append(f"OHIF viewer at {origin}/")
    return lines


@contextlib.contextmanager
def metrics_folder() -> Iterator[None]:
    """A fresh folder for prometheus-client's multiprocess files, removed on exit; set before
    the application (and prometheus-client's value class) is imported by any worker. A folder
    the operator set in PROMETHEUS_MULTIPROC_DIR is used as it is."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="dicomweb-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = folder
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROCESS_DIR_ENV, None)


def run(settings: Settings, sock: socket.socket) -> None:
    """Print the banner, then run uvicorn on the bound socket until SIGTERM / SIGINT, then
    shut down gracefully."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "dicomweb.app:create_app",
        factory=True,
        host=settings.host,
        port=sock.getsockname()[1],
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,  # dicomweb.access logs one JSON object per request instead
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        # The app applies --forwarded-allow-ips itself (urls.TrustedProxies, with uvicorn's
        # ProxyHeadersMiddleware), so that it also knows whether Host-rewriting headers count.
        proxy_headers=False,
        forwarded_allow_ips=",".join(settings.forwarded_allow_ips),
    )
    if settings.workers > 1:
        supervisor = Multiprocess(config, sockets=[sock])  # takes SIGTERM / SIGINT over
        print_banner(settings, sock)
        supervisor.run()
        return
    server = uvicorn.Server(config)

    def stop(signum: int, frame: object) -> None:
        # As uvicorn's own handler: a signal before it takes over (or the one it raises again
        # once it is done) asks for the same graceful stop, never a kill mid-start.
        server.should_exit = True

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, stop)
    print_banner(settings, sock)
    server.run(sockets=[sock])
    if not server.started and not server.should_exit:
        raise StartupError("the application failed to start (the reason is logged above)")


def print_banner(settings: Settings, sock: socket.socket) -> None:
    for line in banner(settings, sock.getsockname()[1]):
        print(line, flush=True)
