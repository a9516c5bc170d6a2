"""The DIMSE service in its own process, started and stopped by `dicomweb serve`.

One process whatever the number of uvicorn workers: a DICOM port is one listener, and
pynetdicom's threads then share no interpreter with the HTTP workers. The process binds
before `serve` goes on (a port in use stops the start-up with one line), stops on SIGTERM or
SIGINT after the associations in progress finish (up to STOP_GRACE_S), and stops by itself
if `serve` dies.
"""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from dicomweb.config import Settings
from dicomweb.serving import StartupError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0


class DimseProcess:
    def __init__(self, process: BaseProcess, address: tuple[str, int]) -> None:
        self.process = process
        self.address = address

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(STOP_GRACE_S + 5)
        if self.process.is_alive():
            log.warning("DIMSE service did not stop in time; killing it")
            self.process.kill()
            self.process.join(5)


def check(settings: Settings) -> None:
    """ConfigError for DIMSE settings that cannot work (nothing to check when off)."""
    if settings.dimse_port is not None:
        from dicomweb.dimse.peers import check_settings

        check_settings(settings)


def start(settings: Settings) -> DimseProcess | None:
    """Start the DIMSE service when a port is set (after the store is created); ConfigError
    for settings that cannot work, StartupError (one line) when it cannot listen or start."""
    if settings.dimse_port is None:
        return None
    check(settings)
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=run, args=(settings, child_end), name="dicomweb-dimse",
                              daemon=False)
    process.start()
    child_end.close()
    if not parent_end.poll(START_TIMEOUT_S):
        process.kill()
        raise StartupError(f"--dimse-port {settings.dimse_port}: the DIMSE service did not start")
    try:
        outcome = parent_end.recv()
    except EOFError:
        outcome = "the DIMSE service exited while starting (the reason is logged above)"
    if isinstance(outcome, str):
        process.join(5)
        raise StartupError(f"--dimse-port {settings.dimse_port}: {outcome}")
    return DimseProcess(process, outcome)


def run(settings: Settings, report: Connection) -> None:
    """The child process: serve until told to stop, or until the parent is gone."""
    from dicomweb.app import configure_logging
    from dicomweb.audit import AuditTrail
    from dicomweb.audit.dimse import DimseAudit
    from dicomweb.dimse.server import DimseService
    from dicomweb.store.repository import Store

    configure_logging(settings.log_level)
    logging.getLogger("dicomweb").setLevel(settings.log_level.upper())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    store = Store(settings)
    trail = AuditTrail(store) if settings.audit == "on" else None
    service = DimseService(settings, store, DimseAudit(trail))
    try:
        service.start()
    except OSError as exc:
        in_use = "; another server is using it" if exc.errno == errno.EADDRINUSE else ""
        report.send(f"cannot listen on {settings.host}:{settings.dimse_port}: "
                    f"{exc.strerror or exc}{in_use}")
        store.close()
        return
    report.send(service.address)
    report.close()
    # pynetdicom runs a full collection every 60 associations: keep what lives as long as the
    # process (modules, pydicom's dictionary) out of it, as the HTTP workers do.
    gc.freeze()
    # uvicorn re-raises the SIGTERM it handled, so `serve` may end without stopping us: its
    # end is our signal too.
    parent = multiprocessing.parent_process()
    while not stop.is_set():
        if parent is not None and wait([parent.sentinel], timeout=0.2):
            log.info("dicomweb serve has stopped; stopping the DIMSE service")
            break
        if parent is None:
            stop.wait(0.2)
    service.stop_listening()
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and service.ae.active_associations:
        time.sleep(0.1)
    service.close()
    store.close()
