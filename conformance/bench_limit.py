"""Our server against the physical limit: nginx serving the very same bytes from files, both
driven by `wrk` (a native load generator) on the same machine, with one and six connections.

    python -m conformance.bench_limit [--slices 392] [--seconds 5] [--runs 3] [--json out.json]

Ours is `dicomweb serve` with its defaults (one worker, the audit trail on, a temporary data
folder holding a generated MR series of `--slices` instances). The two resources are OHIF's
hot ones: the series metadata (DICOM JSON of every instance) and one 128 KiB frame (multipart,
as stored). Their bodies, fetched once from ours, are what nginx serves (`sendfile`, its
default worker processes, access log off), so both send the same bytes per request. Neither
compresses (wrk sends no Accept-Encoding). The report gives requests/s per run, medians, and
how many times nginx's rate is ours.

Needs `wrk` and `nginx` (Debian: `apt-get install wrk nginx-light`); nginx is started here,
on 127.0.0.1, with a configuration of its own, and stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from conformance import benchdata
from conformance.bench import (
    FRAME_ACCEPT,
    encode_multipart,
    fetch_once,
    make_session,
    run_for_duration,
    summarise,
)
from conformance.compare import free_port, run_ours

CONNECTIONS = (1, 6)
METADATA_ACCEPT = "application/dicom+json"
#: The resource also fetched with the Python client (compare's "frames" rows).
PYTHON_CLIENT_RESOURCE = "frame 128 KiB"
NGINX_CONF = """
daemon off;
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {root}/tmp;
  proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp;
  scgi_temp_path {root}/tmp;
  types {{ }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
  }}
}}
"""


def upload_series(url: str, slices: int) -> None:
    session = make_session()
    instances = [benchdata.mr_slice(k, slices) for k in range(slices)]
    for start in range(0, slices, 32):
        body, content_type = encode_multipart(
            [inst.data for inst in instances[start:start + 32]], "application/dicom")
        response = session.post(f"{url}/studies", data=body, timeout=120,
                                headers={"Content-Type": content_type})
        response.raise_for_status()


def resource_paths(url: str) -> dict[str, tuple[str, str]]:
    """Resource name -> (path on our server, Accept)."""
    series = f"studies/{benchdata.mr_study_uid()}/series/{benchdata.mr_series_uid()}"
    frame = f"{series}/instances/{benchdata.mr_series_uid()}.1/frames/1"
    root = url.split("//", 1)[1].split("/", 1)[1]
    return {"series metadata": (f"/{root}/{series}/metadata", METADATA_ACCEPT),
            "frame 128 KiB": (f"/{root}/{frame}", FRAME_ACCEPT)}


@contextmanager
def run_nginx(files: dict[str, bytes]) -> Iterator[str]:
    """nginx on 127.0.0.1 serving `files` (name -> bytes), stopped by PID on exit."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # nginx started as root serves as its worker user (www-data)
        (root / "www").mkdir()
        (root / "tmp").mkdir()
        for name, body in files.items():
            (root / "www" / name).write_bytes(body)
        port = free_port()
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
        process = subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf"),
                                    "-e", str(root / "error.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    requests.get(f"{base}/{next(iter(files))}", timeout=1).raise_for_status()
                    break
                except requests.RequestException:
                    if time.time() > deadline or process.poll() is not None:
                        raise RuntimeError("nginx did not start: " + (
                            root / "error.log").read_text(errors="replace")[-500:]) from None
                    time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def wrk_rate(url: str, accept: str, connections: int, seconds: float) -> float:
    """Requests/s of `wrk` on one URL; any non-2xx answer fails the run."""
    command = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}",
               f"-d{max(1, int(seconds))}s", "-H", f"Accept: {accept}", url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                            check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None or "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk {url}: {output.strip()[-300:]}")
    return float(rate.group(1))


def python_client_rate(url: str, accept: str, clients: int, seconds: float) -> float:
    """Requests/s of conformance.bench's client (as its "frames" rows fetch) on one URL."""
    samples, wall_s = run_for_duration(lambda session, _k: fetch_once(url, accept)(session),
                                       clients, seconds)
    result = summarise(url, clients, samples, wall_s)
    if result.errors or not result.items_per_s:
        raise RuntimeError(f"Python client {url}: {result.errors} errors")
    return result.items_per_s


#: (row name, Accept, connections, ((server, URL), ...), rate function) of one measure.
Measure = tuple[str, str, int, tuple[tuple[str, str], ...], Callable[..., float]]


def limit_measures(paths: dict[str, tuple[str, str]], origin: str, nginx: str,
                   files_by_name: dict[str, str]) -> list[Measure]:
    """Every resource under wrk with 1 and 6 connections, then the frame with the Python
    client and 1 and 6 threads; each from ours, then from nginx."""
    def targets(name: str) -> tuple[tuple[str, str], ...]:
        return (("ours", origin + paths[name][0]), ("nginx", f"{nginx}/{files_by_name[name]}"))

    def plural(count: int, word: str) -> str:
        return f"{count} {word}" + ("s" if count > 1 else "")

    measures: list[Measure] = [
        (f"{name}, {plural(connections, 'connection')}", accept, connections, targets(name),
         wrk_rate)
        for name, (_path, accept) in paths.items() for connections in CONNECTIONS]
    measures += [
        (f"{PYTHON_CLIENT_RESOURCE}, Python client, {plural(connections, 'thread')}",
         paths[PYTHON_CLIENT_RESOURCE][1], connections, targets(PYTHON_CLIENT_RESOURCE),
         python_client_rate)
        for connections in CONNECTIONS]
    return measures


def run_limit_bench(slices: int, seconds: float, runs: int, say: Any = print) -> dict[str, Any]:
    rates: dict[str, dict[str, list[float]]] = {}
    load: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as data, \
            run_ours(Path(data), []) as url:
        upload_series(url, slices)
        origin = url.split("/dicomweb")[0]
        paths = resource_paths(url)
        bodies = {}
        for name, (path, accept) in paths.items():
            response = requests.get(origin + path, headers={"Accept": accept}, timeout=60)
            response.raise_for_status()
            bodies[name] = response.content
        files_by_name = {name: re.sub(r"\W+", "-", name) + ".bin" for name in bodies}
        files = {files_by_name[name]: body for name, body in bodies.items()}
        with run_nginx(files) as nginx:
            measures = limit_measures(paths, origin, nginx, files_by_name)
            for number in range(1, runs + 1):
                for key, accept, connections, targets, rate_of in measures:
                    for server, target in targets:
                        load.append(os.getloadavg()[0])
                        rate = rate_of(target, accept, connections, seconds)
                        rates.setdefault(key, {}).setdefault(server, []).append(rate)
                        say(f"run {number}/{runs} {key} {server}: {rate:.0f}/s")
    medians = {key: {server: statistics.median(values) for server, values in by_server.items()}
               for key, by_server in rates.items()}
    return {
        "slices": slices, "seconds": seconds, "runs": runs, "cpus": os.cpu_count(),
        "bytes": {name: len(body) for name, body in bodies.items()},
        "load_average_1min": {"min": min(load), "median": statistics.median(load),
                              "max": max(load)},
        "medians": medians,
        "nginx_over_ours": {key: round(m["nginx"] / m["ours"], 2) for key, m in medians.items()},
        "per_run": rates,
    }


def render_table(report: dict[str, Any]) -> str:
    lines = ["| resource, connections | ours | nginx | nginx ÷ ours |", "|---|---|---|---|"]
    for key, median in report["medians"].items():
        lines.append(f"| {key} | {median['ours']:.0f} /s | {median['nginx']:.0f} /s | "
                     f"{report['nginx_over_ours'][key]:.2f}× |")
    load = report["load_average_1min"]
    sizes = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in report["bytes"].items())
    lines.append(f"\nmedians of {report['runs']} runs of {report['seconds']:g} s; {sizes}; "
                 f"1-min load average {load['min']:.1f}–{load['max']:.1f} on "
                 f"{report['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=392, help="instances of the MR series")
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} is not installed (Debian: apt-get install wrk nginx-light)")
    report = run_limit_bench(args.slices, args.seconds, args.runs,
                             say=lambda text: print(text, file=sys.stderr))
    print(render_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
