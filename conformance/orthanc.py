"""Start and stop a private Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for benchmarks.

Orthanc runs as a plain child process with its own JSON config, not as the system service.

    python -m conformance.orthanc start --port 8043 --data /tmp/orthanc-bench
    python -m conformance.orthanc stop --data /tmp/orthanc-bench

Caveat: Orthanc 1.10 has no bind-address option, so its HTTP server listens on all
interfaces; ``RemoteAccessAllowed: false`` makes it refuse every request that does not come
from localhost. The DICOM (DIMSE) server is disabled, so no DICOM port is opened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from dicomweb.processes import process_alive

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so.1.7"),
)
PID_FILE_NAME = "orthanc.pid"
LOG_FILE_NAME = "orthanc.log"
DEFAULT_PORT = 8043
DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "orthanc-bench"


@dataclass
class OrthancServer:
    """A running Orthanc started by this module."""

    port: int
    data_dir: Path
    config_path: Path
    process: subprocess.Popen[bytes] | None
    pid: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"


def orthanc_available() -> bool:
    return ORTHANC_BINARY.exists() and find_dicomweb_plugin() is not None


def find_dicomweb_plugin() -> Path | None:
    for candidate in DICOMWEB_PLUGIN_CANDIDATES:
        if candidate.exists():
            return candidate
    return None


#: Orthanc's documented performance options (Orthanc Book, "Performance"), for `--tuned`
#: comparisons: more HTTP threads (default 50) and a bigger storage cache (default 128 MB).
TUNED_OPTIONS: dict[str, object] = {"HttpThreadsCount": 100, "MaximumStorageCacheSize": 512}


def build_config(
    port: int, data_dir: Path, plugin: Path, tuned: bool = False
) -> dict[str, object]:
    """Orthanc configuration: local-only HTTP, no DIMSE, SQLite index + storage in data_dir;
    `tuned` adds TUNED_OPTIONS."""
    return {
        **(TUNED_OPTIONS if tuned else {}),
        "Name": f"bench-orthanc-{port}",
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": False,
        "StorageDirectory": str(data_dir / "storage"),
        "IndexDirectory": str(data_dir / "index"),
        "StorageCompression": False,
        "SaveJobs": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Host": f"127.0.0.1:{port}",  # BulkDataURIs must carry the real port
            "Ssl": False,
        },
    }


def write_config(port: int, data_dir: Path, tuned: bool = False) -> Path:
    plugin = find_dicomweb_plugin()
    if plugin is None:
        raise FileNotFoundError(
            "libOrthancDicomWeb.so not found (apt-get install orthanc-dicomweb)"
        )
    config_dir = Path(tempfile.mkdtemp(prefix=f"orthanc-{port}-"))
    config_path = config_dir / "orthanc.json"
    config_path.write_text(json.dumps(build_config(port, data_dir, plugin, tuned), indent=2))
    return config_path


def port_is_free(port: int) -> bool:
    """True if nothing listens on the port (Orthanc binds 0.0.0.0, so test that address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR (as Orthanc's civetweb does) ignores TIME_WAIT leftovers, not listeners
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port that is currently free (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(data_dir: Path, lines: int = 5) -> str:
    log_path = data_dir / LOG_FILE_NAME
    if not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until_ready(server: OrthancServer, timeout_s: float) -> None:
    """Poll until our own Orthanc (checked by its Name) answers ``GET /dicom-web/studies``."""
    expected_name = f"bench-orthanc-{server.port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited early with code {server.process.returncode}:\n"
                + _log_tail(server.data_dir)
            )
        with contextlib.suppress(requests.RequestException, ValueError):
            system = requests.get(f"{server.base_url}/system", timeout=2).json()
            studies = requests.get(f"{server.dicomweb_url}/studies?limit=1", timeout=5)
            if system.get("Name") == expected_name and studies.status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"Orthanc did not answer on {server.dicomweb_url} within {timeout_s:.0f} s")


def start_orthanc(
    port: int, data_dir: Path, timeout_s: float = 60.0, tuned: bool = False
) -> OrthancServer:
    """Launch Orthanc in its own session, wait for DICOMweb, record its pid in data_dir."""
    if not ORTHANC_BINARY.exists():
        raise FileNotFoundError(f"{ORTHANC_BINARY} missing (apt-get install orthanc)")
    if not port_is_free(port):
        raise RuntimeError(f"port {port} is already in use")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(port, data_dir, tuned)
    log_file = open(data_dir / LOG_FILE_NAME, "ab")  # noqa: SIM115 - kept open by the child
    process = subprocess.Popen(
        [str(ORTHANC_BINARY), "--no-jobs", str(config_path)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    (data_dir / PID_FILE_NAME).write_text(str(process.pid))
    server = OrthancServer(port, data_dir, config_path, process, process.pid)
    try:
        wait_until_ready(server, timeout_s)
    except BaseException:
        stop_server(server)
        raise
    return server


def _terminate_pid(pid: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM the Orthanc pid (graceful: flushes SQLite), SIGKILL after timeout_s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not process_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=10)


def stop_server(server: OrthancServer, timeout_s: float = 20.0) -> None:
    _terminate_pid(server.pid, server.process, timeout_s)
    (server.data_dir / PID_FILE_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        server.config_path.unlink()
        server.config_path.parent.rmdir()


def stop_by_data_dir(data_dir: Path, timeout_s: float = 20.0) -> bool:
    """Stop the Orthanc whose pid file is in data_dir; False if none was recorded/running."""
    pid_file = data_dir / PID_FILE_NAME
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    running = process_alive(pid) and _is_orthanc(pid)
    if running:
        _terminate_pid(pid, None, timeout_s)
    pid_file.unlink(missing_ok=True)
    return running


def _is_orthanc(pid: int) -> bool:
    """Guard against a stale pid file pointing at an unrelated, recycled pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    return str(ORTHANC_BINARY).encode() in cmdline


@contextlib.contextmanager
def run_orthanc(
    port: int = DEFAULT_PORT, data_dir: Path | str | None = None, tuned: bool = False
) -> Iterator[OrthancServer]:
    """Context manager: a running Orthanc, stopped on exit. Data dir defaults to a temp dir."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="orthanc-data-"))
        server = start_orthanc(port, Path(data_dir), tuned=tuned)
        try:
            yield server
        finally:
            stop_server(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="storage + index dir")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for start")
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            server = start_orthanc(args.port, args.data, args.timeout)
        except (OSError, RuntimeError) as exc:
            print(f"cannot start Orthanc: {exc}", file=sys.stderr)
            return 1
        print(
            f"Orthanc pid {server.pid}: DICOMweb at {server.dicomweb_url} (data {server.data_dir})"
        )
        return 0
    if stop_by_data_dir(args.data):
        print(f"Orthanc stopped (data {args.data})")
        return 0
    print(f"no running Orthanc recorded in {args.data}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
