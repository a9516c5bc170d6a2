"""Our server and Orthanc measured in one run, each with its defaults (and optionally tuned):
the conformance suite once, the benchmark several times on fresh data folders, then one
Markdown report of medians and ratios — the source of the README's table.

    python -m conformance.compare [--runs 3] [--quick] [--tuned] [--out conformance/results]

Ours is `dicomweb serve` exactly as the README starts it (one process, its ingest pool);
`--tuned` adds ours with `--workers 2`, ours with `--audit off` and Orthanc with
`orthanc.TUNED_OPTIONS`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from conformance.orthanc import TUNED_OPTIONS, run_orthanc
from conformance.suite.report import compare_markdown

Report = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def run_ours(data_dir: Path, extra: list[str]) -> Iterator[str]:
    """`dicomweb serve` on 127.0.0.1 (the README's command), stopped on exit."""
    with run_ours_process(data_dir, extra) as (url, _pid):
        yield url


@contextmanager
def run_ours_process(data_dir: Path, extra: list[str]) -> Iterator[tuple[str, int]]:
    """`run_ours`, also giving the server's process id."""
    port = free_port()
    command = [sys.executable, "-m", "dicomweb.cli", "serve", "--port", str(port),
               "--data", str(data_dir), *extra]  # default log level: one access line a request
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/dicomweb", process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextmanager
def run_theirs(data_dir: Path, tuned: bool) -> Iterator[str]:
    with run_orthanc(free_port(), data_dir, tuned=tuned) as orthanc:
        yield f"{orthanc.base_url}/dicom-web"


@dataclass(frozen=True)
class Contender:
    label: str
    start: Callable[[Path], Any]  # data folder -> context manager yielding the DICOMweb URL


def contenders(tuned: bool) -> list[Contender]:
    found = [
        Contender("ours", lambda d: run_ours(d, [])),
        Contender("orthanc", lambda d: run_theirs(d, False)),
    ]
    if tuned:
        found += [
            Contender("ours --workers 2", lambda d: run_ours(d, ["--workers", "2"])),
            Contender("ours --audit off", lambda d: run_ours(d, ["--audit", "off"])),
            Contender("orthanc tuned", lambda d: run_theirs(d, True)),
        ]
    return found


def run_json(module: str, url: str, label: str, out: Path, extra: list[str]) -> Report:
    command = [sys.executable, "-m", module, "--url", url, "--label", label, "--json", str(out),
               *extra]
    subprocess.run(command, check=False, timeout=3600)
    return json.loads(out.read_text())


# ---------------------------------------------------------------- reading the bench reports


def _find(items: list[dict[str, Any]], name: str, clients: int | None = None) -> dict | None:
    for item in items or []:
        if item.get("name") == name and (clients is None or item.get("clients") == clients):
            return item if item.get("supported", True) else None
    return None


def rate(section: str, name: str, clients: int, field: str = "items_per_s"):
    def get(report: Report) -> float | None:
        item = _find(report.get(section, []), name, clients)
        return item.get(field) if item else None

    return get


def qido_p50(name: str):
    def get(report: Report) -> float | None:
        item = _find(report.get("qido", []), name)
        return item.get("p50_ms") if item else None

    return get


def single(section: str, field: str):
    def get(report: Report) -> float | None:
        item = report.get(section) or {}
        return item.get(field) if item.get("supported", True) else None

    return get


@dataclass(frozen=True)
class Row:
    """One line of the headline table: `higher` is better for rates, lower for latencies."""

    label: str
    value: Callable[[Report], float | None]
    unit: str
    higher: bool
    aim: float | None  # ratio ours/theirs the issue asks for (≥ for rates, ≤ for latencies)


ROWS = [
    Row("STOW small studies, batches of 32, 4 clients", rate("stow", "stow small", 4),
        "inst/s", True, 1.5),
    Row("STOW small studies, batches of 32, 1 client", rate("stow", "stow small", 1),
        "inst/s", True, None),
    Row("STOW of an RT study (392 MR + 60 CT + RT), 1 client", rate("stow", "stow rt", 1),
        "inst/s", True, 1.5),
    Row("frames, 6 concurrent clients", rate("frames", "frames", 6), "/s", True, 3.0),
    Row("frames, 1 client", rate("frames", "frames", 1), "/s", True, 3.0),
    Row("frames, native client (wrk), 6 connections", rate("frames", "frames (wrk)", 6), "/s",
        True, None),
    Row("frames, native client (wrk), 1 connection", rate("frames", "frames (wrk)", 1), "/s",
        True, None),
    Row("rendered JPEG 512², each image new", single("rendered", "items_per_s"), "/s", True,
        2.0),
    Row("rendered JPEG 512², the same image again", single("rendered_repeated", "items_per_s"),
        "/s", True, None),
    Row("rendered JPEG 512², each image new, native client (wrk)",
        single("rendered_native", "items_per_s"), "/s", True, 2.0),
    Row("QIDO OHIF study list, p50", qido_p50("OHIF study list"), "ms", False, 0.1),
    Row("QIDO PatientName=S*, p50", qido_p50("PatientName=S*"), "ms", False, 0.05),
    Row("QIDO 392-instance list, p50", qido_p50("MR series instances"), "ms", False, 0.05),
    Row("QIDO by PatientID, p50", qido_p50("PatientID"), "ms", False, None),
    Row("series metadata, 392 instances, p50", single("metadata", "p50_ms"), "ms", False, 0.05),
    Row("series metadata, gzip, p50", single("metadata_gzip", "p50_ms"), "ms", False, None),
    Row("series metadata, gzip, bytes on the wire", single("metadata_gzip", "wire_bytes"), "B",
        False, None),
    Row("retrieve a series (multipart, Python client)", single("series_retrieve", "mb_per_s"),
        "MB/s", True, 1.5),
    Row("retrieve a series (multipart, native client: curl)",
        single("series_retrieve_native", "mb_per_s"), "MB/s", True, 1.5),
]


def median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "B":
        return f"{value / 1000:,.0f} kB"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    return f"{value:,.0f} {unit}"


def ratio_text(row: Row, ours: float | None, theirs: float | None) -> tuple[str, str]:
    if not ours or not theirs:
        return "n/a", ""
    value = ours / theirs
    if row.aim is None:
        return f"{value:.2f}×", ""
    met = value >= row.aim if row.higher else value <= row.aim
    sign = "≥" if row.higher else "≤"
    return f"{value:.2f}×", f"{sign} {row.aim:g}× {'✓' if met else '✗'}"


def headline(runs: dict[str, list[Report]], first: str = "ours", second: str = "orthanc") -> str:
    labels = [label for label in runs if label not in (first, second)]
    header = f"| workload | {first} | {second} | ratio | aim |" + "".join(
        f" {label} |" for label in labels)
    lines = [header, "|---" * (5 + len(labels)) + "|"]
    for row in ROWS:
        values = {label: median([row.value(r) for r in reports])
                  for label, reports in runs.items()}
        ratio, aim = ratio_text(row, values.get(first), values.get(second))
        cells = [row.label, fmt(values.get(first), row.unit), fmt(values.get(second), row.unit),
                 ratio, aim, *(fmt(values.get(label), row.unit) for label in labels)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_run(runs: dict[str, list[Report]]) -> str:
    """Each run's figure for the headline rows: how noisy the machine was."""
    lines = ["| workload | " + " | ".join(runs) + " |", "|---" * (1 + len(runs)) + "|"]
    for row in ROWS:
        cells = [" / ".join(fmt(row.value(r), "").strip() for r in reports)
                 for reports in runs.values()]
        lines.append(f"| {row.label} ({row.unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("conformance/results"))
    parser.add_argument("--runs", type=int, default=3, help="benchmark runs per server")
    parser.add_argument("--quick", action="store_true", help="small benchmark (a few minutes)")
    parser.add_argument("--tuned", action="store_true",
                        help="also ours --workers 2, ours --audit off, Orthanc tuned")
    parser.add_argument("--no-conformance", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Orthanc gzips every response a client accepts compressed, pixel data included, which
    # makes its frames 3-4x slower: both servers are measured without HTTP compression
    # (the gzip metadata row asks for it explicitly).
    bench_extra = ["--accept-encoding", "identity", *(["--quick"] if args.quick else [])]
    people = contenders(args.tuned)
    runs: dict[str, list[Report]] = {c.label: [] for c in people}
    conformance: dict[str, Report] = {}
    loads = [load_average()]
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        for run in range(args.runs):
            for contender in people:  # interleaved: a noisy minute hits every server alike
                slug = contender.label.replace(" ", "-").replace("--", "")
                with contender.start(Path(scratch) / f"{slug}-{run}") as url:
                    if run == 0 and not args.no_conformance and contender.label in (
                            "ours", "orthanc"):
                        conformance[contender.label] = run_json(
                            "conformance", url, contender.label,
                            args.out / f"{slug}-conformance.json", ["--no-fail"])
                    runs[contender.label].append(run_json(
                        "conformance.bench", url, contender.label,
                        args.out / f"{slug}-bench-{run + 1}.json", bench_extra))
            loads.append(load_average())
    workers = "ours: `dicomweb serve` (one process + its ingest pool, one per core)"
    tuned = (f"; also ours `--workers 2`, ours `--audit off`, Orthanc tuned "
             f"{json.dumps(TUNED_OPTIONS)}" if args.tuned else "")
    sections = [
        "# Our server and Orthanc, measured in one run",
        f"Command: `python -m conformance.compare{' --quick' if args.quick else ''}"
        f"{' --tuned' if args.tuned else ''} --runs {args.runs}`, started {started}; "
        f"{workers}; Orthanc 1.10.1 + DICOMweb 1.7 from Debian with its defaults{tuned}. "
        f"Each cell is the median of {args.runs} runs; ratio = ours / Orthanc. Requests "
        "without HTTP compression (`Accept-Encoding: identity`) except the gzip row. "
        f"Load average (1, 5, 15 min) before and after each run: {'; '.join(loads)} "
        f"on {os.cpu_count()} cores.",
        "## Headline",
        headline(runs),
        "## Each run",
        per_run(runs),
    ]
    if "ours" in conformance and "orthanc" in conformance:
        sections += ["## Conformance",
                     compare_markdown(conformance["ours"], conformance["orthanc"])]
    report = "\n\n".join(sections)
    (args.out / "comparison.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
