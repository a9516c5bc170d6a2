"""C-STORE throughput, ours and Orthanc's DIMSE side by side in one run: dcmtk's storescu
sends the same small instances over 1 and over 4 associations to each server.

    python -m conformance.dimse_bench [--instances 600] [--repeat 3] [--json out.json]

Both servers run with the defaults a user gets (ours: `dicomweb serve --dimse-port`, SQLite,
fsync per instance; Orthanc 1.10: SQLite, SyncStorageArea on), each on a fresh data folder,
and both run with TCP_NODELAY=1, as storescu does. Every run sends instances neither server
has seen; runs alternate between the servers so load on the machine falls on both alike.
Reports the median of the repeats, the ratio ours/Orthanc, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from conformance import orthanc
from conformance.benchdata import small_study
from conformance.tools import dcmtk_tool

CALLING_AE = "BENCH"
OUR_AE = "DICOMWEB"
ORTHANC_AE = "ORTHANC"
ASSOCIATIONS = (1, 4)
#: Study indexes of each run start here, so no run resends an instance (benchdata: same index,
#: same UIDs).
RUN_INDEX_STEP = 100_000


@dataclass
class Peer:
    name: str
    ae_title: str
    port: int
    pid: int  # the server's process; its children count too


def cpu_seconds(pid: int) -> float:
    """User and system CPU of `pid` and its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    family = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    return sum(times.get(p, 0.0) for p in family)


@dataclass
class Run:
    server: str
    associations: int
    instances: int
    seconds: float
    load_average: float
    #: CPU time of the server's processes during the run: robust to a loaded machine.
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.instances / self.seconds


def tool_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    return orthanc.free_port()


def write_instances(folder: Path, first_study: int, count: int) -> list[Path]:
    """`count` small CT/MR/CR instances (64x64, explicit VR little endian, ~9 KB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    index = first_study
    while len(paths) < count:
        for instance in small_study(index):
            if len(paths) == count:
                break
            path = folder / f"{instance.sop_uid}.dcm"
            path.write_bytes(instance.data)
            paths.append(path)
        index += 1
    return paths


def store(peer: Peer, paths: list[Path], associations: int) -> float:
    """Seconds for `associations` storescu processes to send `paths` between them."""
    chunks = [paths[i::associations] for i in range(associations)]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [dcmtk_tool("storescu") or "storescu", "-aet", CALLING_AE, "-aec", peer.ae_title,
             "127.0.0.1", str(peer.port), *map(str, chunk)],
            env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=3600)
        if process.returncode != 0 or b"E:" in stderr:
            failures.append(stderr.decode(errors="replace")[-400:])
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"storescu to {peer.name} failed: {failures[0]}")
    return seconds


@contextmanager
def run_ours(folder: Path, source: Path | None = None,
             name: str = "ours") -> Iterator[tuple[Peer, str]]:
    """`dicomweb serve --dimse-port` with its defaults; `source`: another checkout's code."""
    http_port, dimse_port = free_port(), free_port()
    log = (folder / f"{name}.log").open("wb")
    env = {k: v for k, v in tool_env().items() if not k.startswith("DICOMWEB_")}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomweb.cli", "serve", "--host", "127.0.0.1", "--port",
         str(http_port), "--data", str(folder / name), "--dimse-port", str(dimse_port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{http_port}/dicomweb"
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).ok,
                 process, "our server")
        yield Peer(name, OUR_AE, dimse_port, process.pid), url
    finally:
        process.terminate()
        process.wait(60)
        log.close()


@contextmanager
def run_orthanc(folder: Path) -> Iterator[tuple[Peer, str]]:
    """Orthanc with its DICOM server on; it has no bind address option (it listens on every
    interface), so it accepts associations only from BENCH at 127.0.0.1."""
    http_port, dimse_port = free_port(), free_port()
    data_dir = (folder / "orthanc").resolve()
    data_dir.mkdir(parents=True)
    plugin = orthanc.find_dicomweb_plugin()
    if plugin is None or not orthanc.ORTHANC_BINARY.exists():
        raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc "
                                "orthanc-dicomweb)")
    config = orthanc.build_config(http_port, data_dir, plugin)
    config.update({
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE,
        "DicomPort": dimse_port,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"bench": [CALLING_AE, "127.0.0.1", 104]},  # port unused
    })
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = (data_dir / orthanc.LOG_FILE_NAME).open("ab")
    process = subprocess.Popen([str(orthanc.ORTHANC_BINARY), "--no-jobs", str(config_path)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=tool_env(), start_new_session=True)
    log.close()
    server = orthanc.OrthancServer(http_port, data_dir, config_path, process, process.pid)
    try:
        orthanc.wait_until_ready(server, 60)
        yield Peer("orthanc", ORTHANC_AE, dimse_port, process.pid), server.dicomweb_url
    finally:
        orthanc.stop_server(server)


def wait_for(ready, process: subprocess.Popen[bytes], name: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not start")


def stored_instances(name: str, url: str) -> int:
    if name == "orthanc":  # its REST API counts without listing
        statistics_url = url.rsplit("/dicom-web", 1)[0] + "/statistics"
        return int(requests.get(statistics_url, timeout=60).json()["CountInstances"])
    response = requests.get(f"{url}/instances", params={"limit": 10000}, timeout=120)
    return len(response.json()) if response.status_code == 200 else 0


def benchmark(instances: int, repeat: int, folder: Path) -> list[Run]:
    runs: list[Run] = []
    with run_ours(folder) as (ours, ours_url), run_orthanc(folder) as (theirs, orthanc_url):
        number = 0
        for repetition in range(repeat):
            for associations in ASSOCIATIONS:
                number += 1
                paths = write_instances(folder / f"run{number}", number * RUN_INDEX_STEP,
                                        instances)
                peers = [ours, theirs] if repetition % 2 == 0 else [theirs, ours]
                for peer in peers:
                    cpu_before = cpu_seconds(peer.pid)
                    seconds = store(peer, paths, associations)
                    cpu = cpu_seconds(peer.pid) - cpu_before
                    runs.append(Run(peer.name, associations, instances, seconds,
                                    os.getloadavg()[0], cpu))
                    print(f"  {peer.name:8} {associations} association(s): "
                          f"{instances / seconds:7.1f} instances/s, "
                          f"{cpu / instances * 1000:5.2f} ms CPU each "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
        expected = number * instances
        for name, url in (("ours", ours_url), ("orthanc", orthanc_url)):
            found = stored_instances(name, url)
            if found != expected:
                raise RuntimeError(f"{name} holds {found} instances, {expected} were sent")
    return runs


def summary(runs: list[Run]) -> dict[str, object]:
    rows = []
    for associations in ASSOCIATIONS:
        rates = {
            server: statistics.median(
                r.rate for r in runs if r.server == server and r.associations == associations)
            for server in ("ours", "orthanc")
        }
        cpu = {
            server: statistics.median(
                r.cpu_seconds / r.instances * 1000
                for r in runs if r.server == server and r.associations == associations)
            for server in ("ours", "orthanc")
        }
        rows.append({"associations": associations, "ours_per_s": round(rates["ours"], 1),
                     "orthanc_per_s": round(rates["orthanc"], 1),
                     "ratio": round(rates["ours"] / rates["orthanc"], 2),
                     "ours_cpu_ms": round(cpu["ours"], 2),
                     "orthanc_cpu_ms": round(cpu["orthanc"], 2)})
    loads = [r.load_average for r in runs]
    return {"rows": rows, "load_average": {"min": min(loads), "max": max(loads)},
            "cpus": os.cpu_count(), "runs": [asdict(r) | {"rate": r.rate} for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=600, help="instances per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server and setting")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dimse-bench-") as scratch:
        runs = benchmark(args.instances, args.repeat, Path(scratch))
    result = summary(runs)
    print("\n| associations | ours (instances/s) | Orthanc (instances/s) | ours/Orthanc | "
          "CPU per instance, ours / Orthanc (ms) |")
    print("|---|---|---|---|---|")
    for row in result["rows"]:  # type: ignore[union-attr]
        print(f"| {row['associations']} | {row['ours_per_s']} | {row['orthanc_per_s']} | "
              f"{row['ratio']} | {row['ours_cpu_ms']} / {row['orthanc_cpu_ms']} |")
    load = result["load_average"]
    print(f"\nmedian of {args.repeat} runs of {args.instances} instances; load average "
          f"{load['min']:.1f}-{load['max']:.1f} on {result['cpus']} CPUs")  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
