"""Server CPU time per request (user + system of the server process, from /proc), for the
read workloads of `conformance.bench`: on a shared, noisy machine this moves far less than
wall time. The server must already hold the bench data (run `conformance.bench` once).

    python -m conformance.cpu_per_request --url http://127.0.0.1:8042/dicomweb --pid PID

Each workload is warmed up, then asked `--requests` times by one client, in turn.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from conformance import bench

Request = tuple[str, str]  # URL, Accept
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JSON = "application/dicom+json"


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its threads (proc(5): fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def workloads(url: str, targets: bench.Targets) -> dict[str, Callable[[int], Request]]:
    queries = dict(bench.qido_paths(targets))
    series = f"{url}/studies/{targets.mr_study_uid}/series/{targets.ct_series_uid}"
    slices = targets.ct_instance_uids or [targets.ct_instance_uid]
    stamp = int(time.time()) % 100_000  # windows not asked before: nothing comes from a cache

    def rendered(k: int) -> Request:
        instance = slices[k % len(slices)]
        return f"{series}/instances/{instance}/rendered?window=40,{400 + stamp + k},linear", \
            "image/jpeg"

    def query(name: str) -> Callable[[int], Request]:
        return lambda k: (f"{url}/{queries[name]}", JSON)

    return {
        "rendered jpeg, each image new": rendered,
        "QIDO OHIF study list": query("OHIF study list"),
        "QIDO PatientName=S*": query("PatientName=S*"),
        "QIDO 392-instance list": query("MR series instances"),
        "QIDO PatientID": query("PatientID"),
    }


def measure(pid: int, make: Callable[[int], Request], count: int) -> tuple[float, float]:
    """(server CPU ms, client wall p50 ms) per request."""
    session = bench.make_session()
    for k in range(3):
        target, accept = make(10_000 + k)
        session.get(target, headers={"Accept": accept}, timeout=60).raise_for_status()
    walls = []
    before = process_cpu_seconds(pid)
    for k in range(count):
        target, accept = make(k)
        started = time.perf_counter()
        session.get(target, headers={"Accept": accept}, timeout=60).raise_for_status()
        walls.append(time.perf_counter() - started)
    cpu = process_cpu_seconds(pid) - before
    return 1000 * cpu / count, 1000 * sorted(walls)[count // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="DICOMweb base URL")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--requests", type=int, default=100, help="requests per workload")
    args = parser.parse_args(argv)
    options = bench.parse_args(["--url", args.url])
    targets = bench.resolve_targets(bench.make_session(), options)
    print(f"{'workload':32} {'server CPU ms':>14} {'wall p50 ms':>12}")
    for name, make in workloads(options.url, targets).items():
        cpu, wall = measure(args.pid, make, args.requests)
        print(f"{name:32} {cpu:14.2f} {wall:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
