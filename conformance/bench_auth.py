"""What authentication and the audit trail cost: QIDO and frame latency with them on versus off,
measured in one run on the same data.

    python -m conformance.bench_auth [--rounds 3] [--requests 300] [--json out.json]

Starts `dicomweb serve` itself (127.0.0.1, one worker, otherwise the defaults a user gets),
the four configurations side by side, once per round:

* ``off``: no authentication, ``--audit off``;
* ``audit``: no authentication, the audit trail on (the default);
* ``oidc``: OpenID Connect bearer tokens and the audit trail. The issuer is a small local one
  (discovery and JWKS over HTTP, RS256 tokens minted here with PyJWT): the server verifies them
  exactly as a real provider's;
* ``apikey``: an API key (`dicomweb apikey create`) and the audit trail.

Each runs on its own copy of one data folder, as a server with its defaults (one worker) has a
database only it writes. Each latency measure sends its requests to the four
servers in turn (request k to all four, the order rotated each time), so whatever else the
machine does hits every configuration alike, within milliseconds: sequential latency (p50, p95
over ``--requests`` requests per configuration after a warm-up) of OHIF's study-list QIDO (50
studies listed), of a PatientID QIDO (one study) and of one 128 KiB frame (OHIF's Accept), with
each server process's CPU time per request (from /proc); then frames/s of 6 concurrent
clients, one configuration after another. The report gives medians over the rounds, each
configuration's ratio to ``off``, and the machine's load average. SQLite only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance import benchdata
from conformance.bench import (
    FRAME_ACCEPT,
    Sample,
    encode_multipart,
    make_session,
    percentile_ms,
    run_for_duration,
    summarise,
)
from conformance.compare import free_port

CONFIGURATIONS = ("off", "audit", "oidc", "apikey")
STUDIES = 50
MR_SLICES = 24
AUDIENCE = "urn:dicomweb:bench"
STUDY_LIST = ("studies?limit=101&offset=0&fuzzymatching=true"
              "&includefield=00081030%2C00080060%2C00080090%2C00100030")
PATIENT_SEARCH = f"studies?PatientID={benchdata.patient_id(7)}"
CONCURRENT_CLIENTS = 6
CONCURRENT_SECONDS = 5.0
WARM_UP = 20
TIMEOUT = 60


# --- a local OpenID issuer -------------------------------------------------------------------
class LocalIssuer:
    """Discovery and JWKS on 127.0.0.1, and RS256 access tokens signed with its key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        documents = {
            "/.well-known/openid-configuration": {"issuer": self.url,
                                                  "jwks_uri": f"{self.url}/jwks"},
            "/jwks": {"keys": [{**jwk, "kid": "bench", "alg": "RS256", "use": "sig"}]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": "bench-user", "azp": "bench",
                  "iat": now, "exp": now + 3600, "scope": "dicomweb:read dicomweb:write"}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench"})

    def stop(self) -> None:
        self.server.shutdown()


# --- servers -------------------------------------------------------------------------------
@dataclass
class Options:
    rounds: int
    requests: int
    data_dir: Path


def dicomweb(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    return subprocess.run([sys.executable, "-m", "dicomweb.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=True)


def store_options(options: Options) -> list[str]:
    return ["--data", str(options.data_dir)]


@dataclass
class Running:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc): unlike latency,
        it barely depends on what else the machine runs."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(options: Options, extra: list[str]) -> Iterator[Running]:
    """`dicomweb serve` (one process) with `extra` options, stopped by PID on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomweb.cli", "serve", "--port", str(port),
         "--log-level", "warning", *store_options(options), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"dicomweb serve {' '.join(extra)} did not start")
            time.sleep(0.2)
        yield Running(f"http://127.0.0.1:{port}/dicomweb", process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def upload(url: str) -> None:
    """The 50 small studies and the MR series, unless a previous run stored them."""
    session = make_session()
    listed = session.get(f"{url}/{STUDY_LIST}", timeout=TIMEOUT)
    if listed.status_code == 200 and len(listed.json()) >= STUDIES + 1:
        return
    batches = [inst for i in range(STUDIES) for inst in benchdata.small_study(i)]
    batches += [benchdata.mr_slice(k, MR_SLICES) for k in range(MR_SLICES)]
    for start in range(0, len(batches), 32):
        body, content_type = encode_multipart(
            [inst.data for inst in batches[start:start + 32]], "application/dicom")
        response = session.post(f"{url}/studies", data=body, timeout=TIMEOUT,
                                headers={"Content-Type": content_type})
        if response.status_code != 200:
            raise RuntimeError(f"STOW failed: {response.status_code} {response.text[:300]}")


def frame_path(k: int) -> str:
    uid = f"{benchdata.mr_series_uid()}.{k % MR_SLICES + 1}"
    return (f"studies/{benchdata.mr_study_uid()}/series/{benchdata.mr_series_uid()}"
            f"/instances/{uid}/frames/1")


# --- measurements --------------------------------------------------------------------------
@dataclass
class Client:
    """One configuration's server and the session that calls it."""

    server: Running
    session: requests.Session


def timed_get(client: Client, path: str, accept: str) -> float:
    started = time.perf_counter()
    response = client.session.get(f"{client.server.url}/{path}", timeout=TIMEOUT,
                                  headers={"Accept": accept})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
    return elapsed


def interleaved_latencies(clients: dict[str, Client], paths: list[str], accept: str,
                          count: int) -> dict[str, list[float]]:
    """Request k goes to every configuration in turn, starting one further along each time, so
    no configuration always follows the same one."""
    names = list(clients)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for k in range(WARM_UP + count):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timed_get(clients[name], paths[k % len(paths)], accept)
            if k >= WARM_UP:
                timings[name].append(elapsed)
    return timings


def frames_per_second(client: Client) -> float:
    def request_once(session: requests.Session, k: int) -> Sample:
        started = time.perf_counter()
        response = session.get(f"{client.server.url}/{frame_path(k)}", timeout=TIMEOUT,
                               headers={"Accept": FRAME_ACCEPT})
        return Sample(time.perf_counter() - started, response.status_code == 200, 1,
                      len(response.content))

    samples, wall = run_for_duration(request_once, CONCURRENT_CLIENTS, CONCURRENT_SECONDS,
                                     session_headers=dict(client.session.headers))
    result = summarise("frames", CONCURRENT_CLIENTS, samples, wall)
    if result.errors:
        raise RuntimeError(f"{result.errors} frame requests failed")
    return result.items_per_s or 0.0


def measure(clients: dict[str, Client], count: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {name: {} for name in clients}
    for measure_name, paths, accept in (
        ("qido_study_list", [STUDY_LIST], "application/dicom+json"),
        ("qido_patient", [PATIENT_SEARCH], "application/dicom+json"),
        ("frame", [frame_path(k) for k in range(MR_SLICES)], FRAME_ACCEPT),
    ):
        before = {name: client.server.cpu_seconds() for name, client in clients.items()}
        timings = interleaved_latencies(clients, paths, accept, count)
        for name, client in clients.items():
            cpu = client.server.cpu_seconds() - before[name]
            found = figures[name]
            found[f"{measure_name}_p50_ms"] = percentile_ms(timings[name], 50) or 0.0
            found[f"{measure_name}_p95_ms"] = percentile_ms(timings[name], 95) or 0.0
            found[f"{measure_name}_cpu_ms"] = round(cpu * 1000 / (WARM_UP + count), 3)
    for name, client in clients.items():
        figures[name]["frames_per_s_6_clients"] = frames_per_second(client)
    return figures


def prepare(options: Options) -> dict[str, Options]:
    """Fills the data folder (unless a previous run did) for the `off` server and copies it
    for each of the others: with its defaults (one worker) a server's database is written by
    that server alone. Sharing one folder, the audited servers took turns moving the chain's
    head (each append found it moved by the other), and their writes made the `off` server
    read the index afresh."""
    with serving(options, ["--audit", "off"]) as server:
        upload(server.url)
    folders = {"off": options}
    for name in CONFIGURATIONS[1:]:
        copy = Options(options.rounds, options.requests,
                       options.data_dir.with_name(f"{options.data_dir.name}-{name}"))
        shutil.rmtree(copy.data_dir, ignore_errors=True)
        shutil.copytree(options.data_dir, copy.data_dir)
        folders[name] = copy
    return folders


@contextmanager
def all_configurations(folders: dict[str, Options], issuer: LocalIssuer,
                       key: str) -> Iterator[dict[str, Client]]:
    oidc = ["--oidc-issuer", issuer.url, "--oidc-audience", AUDIENCE]
    plans = {
        "off": (["--audit", "off"], {}),
        "audit": ([], {}),
        "oidc": (oidc, {"Authorization": f"Bearer {issuer.token()}"}),
        "apikey": ([], {"Authorization": f"Bearer {key}"}),
    }
    with ExitStack() as stack:
        clients = {}
        for name, (extra, headers) in plans.items():
            session = make_session(1)
            session.headers.update(headers)
            clients[name] = Client(stack.enter_context(serving(folders[name], extra)), session)
        yield clients


def run_auth_bench(options: Options, say: Any = print) -> dict[str, Any]:
    issuer = LocalIssuer()
    folders = prepare(options)
    created = dicomweb("apikey", "create", "--name", "bench", "--scopes",
                       "dicomweb:read dicomweb:write", *store_options(folders["apikey"]))
    key = created.stdout.split()[0]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGURATIONS}
    load: list[float] = []
    try:
        for number in range(1, options.rounds + 1):
            load.append(os.getloadavg()[0])
            with all_configurations(folders, issuer, key) as clients:
                figures = measure(clients, options.requests)
            for name in CONFIGURATIONS:
                rounds[name].append(figures[name])
                say(f"round {number}/{options.rounds} {name}: {figures[name]}")
    finally:
        issuer.stop()
        for name in CONFIGURATIONS[1:]:
            shutil.rmtree(folders[name].data_dir, ignore_errors=True)
    medians = {name: {metric: round(statistics.median(r[metric] for r in runs), 3)
                      for metric in runs[0]} for name, runs in rounds.items()}
    ratios = {name: {metric: round(value / medians["off"][metric], 3)
                     for metric, value in figures.items() if medians["off"][metric]}
              for name, figures in medians.items()}
    return {
        "database": "sqlite",
        "rounds": options.rounds, "requests": options.requests, "cpus": os.cpu_count(),
        "load_average_1min": {"min": min(load), "median": statistics.median(load),
                              "max": max(load)},
        "medians": medians, "ratio_to_off": ratios, "per_round": rounds,
    }


ROWS = (
    ("QIDO study list (50 studies) p50", "qido_study_list_p50_ms", "ms"),
    ("QIDO study list p95", "qido_study_list_p95_ms", "ms"),
    ("QIDO PatientID (1 study) p50", "qido_patient_p50_ms", "ms"),
    ("QIDO PatientID p95", "qido_patient_p95_ms", "ms"),
    ("frame 128 KiB p50", "frame_p50_ms", "ms"),
    ("frame 128 KiB p95", "frame_p95_ms", "ms"),
    ("frames/s, 6 clients", "frames_per_s_6_clients", "/s"),
    ("server CPU per study list", "qido_study_list_cpu_ms", "ms"),
    ("server CPU per PatientID QIDO", "qido_patient_cpu_ms", "ms"),
    ("server CPU per frame", "frame_cpu_ms", "ms"),
)


def render_table(report: dict[str, Any]) -> str:
    medians, ratios = report["medians"], report["ratio_to_off"]
    width = max(len(label) for label, _, _ in ROWS)
    header = f"{'measure':<{width}}  " + "  ".join(f"{name:>16}" for name in CONFIGURATIONS)
    lines = [header, "-" * len(header)]
    for label, metric, unit in ROWS:
        cells = []
        for name in CONFIGURATIONS:
            value = medians[name][metric]
            cell = f"{value:.2f} {unit}" if name == "off" else \
                f"{value:.2f} ({ratios[name][metric]:.2f}x)"
            cells.append(f"{cell:>16}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    load = report["load_average_1min"]
    lines.append(f"{report['database']}, medians of {report['rounds']} rounds; 1-min load "
                 f"average {load['min']:.1f}–{load['max']:.1f} on {report['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300,
                        help="timed requests per latency measure")
    parser.add_argument("--data", type=Path, help="data folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as temporary:
        options = Options(args.rounds, args.requests, args.data or Path(temporary))
        report = run_auth_bench(options, say=lambda text: print(text, file=sys.stderr))
    print(render_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
