"""Our server and Orthanc measured in one run: the conformance suite and the benchmark against
each, on fresh data folders, written as one side-by-side Markdown report.

    python -m conformance.compare [--out conformance/results] [--quick] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from conformance.orthanc import run_orthanc
from conformance.suite.report import compare_markdown


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def run_ours(data_dir: Path, workers: int) -> Iterator[str]:
    """`dicomweb serve` on 127.0.0.1 (the README's command), stopped on exit."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomweb.cli",
            "serve",
            "--port",
            str(port),
            "--data",
            str(data_dir),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/dicomweb"
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_json(module: str, url: str, label: str, out: Path, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        module,
        "--url",
        url,
        "--label",
        label,
        "--json",
        str(out),
        *extra,
    ]
    subprocess.run(command, check=False, timeout=3600)
    return json.loads(out.read_text())


def bench_rows(report: dict[str, Any]) -> dict[str, str]:
    """One display value per benchmark row (medians and p50/p95, as the bench prints them)."""
    rows: dict[str, str] = {}
    for item in report.get("stow", []):
        key = f"STOW {item['name'].removeprefix('stow ')} ×{item['clients']} (inst/s, MB/s)"
        rows[key] = (
            f"{item['items_per_s']:.0f}, {item['mb_per_s']:.1f}"
            if item.get("items_per_s")
            else "n/a"
        )
    for item in report.get("qido", []):
        key = f"QIDO {item['name']} (p50/p95 ms, rows)"
        rows[key] = (
            f"{item['p50_ms']:.1f} / {item['p95_ms']:.1f}, {item['rows']}"
            if item.get("p50_ms") is not None
            else "n/a"
        )
    metadata = report.get("metadata") or {}
    if metadata.get("p50_ms") is not None:
        rows["series metadata, 400 instances (p50/p95 ms)"] = (
            f"{metadata['p50_ms']:.1f} / {metadata['p95_ms']:.1f}"
        )
    for item in report.get("frames", []):
        key = f"{item['name']} ×{item['clients']} (frames/s)"
        rows[key] = f"{item['items_per_s']:.0f}" if item.get("items_per_s") else "n/a"
    for section in ("rendered", "series_retrieve"):
        item = report.get(section) or {}
        if item:
            unit = "images/s" if section == "rendered" else "MB/s"
            value = item.get("items_per_s") if section == "rendered" else item.get("mb_per_s")
            rows[f"{item.get('name', section)} ({unit})"] = f"{value:.0f}" if value else "n/a"
    return rows


def bench_markdown(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    left, right = bench_rows(ours), bench_rows(theirs)
    lines = ["| benchmark | ours | Orthanc |", "|---|---|---|"]
    for key in dict.fromkeys([*left, *right]):
        lines.append(f"| {key} | {left.get(key, 'n/a')} | {right.get(key, 'n/a')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("conformance/results"))
    parser.add_argument("--quick", action="store_true", help="small benchmark (a few minutes)")
    parser.add_argument("--workers", type=int, default=2, help="our server's worker processes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Orthanc gzips every response a client accepts compressed, pixel data included, which
    # makes its frames 3-4x slower: both servers are measured without HTTP compression.
    bench_extra = ["--accept-encoding", "identity", *(["--quick"] if args.quick else [])]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        scratch_dir = Path(scratch)
        with run_ours(scratch_dir / "ours", args.workers) as url:
            results["ours-conformance"] = run_json(
                "conformance", url, "ours", args.out / "ours-conformance.json", ["--no-fail"]
            )
            results["ours-bench"] = run_json(
                "conformance.bench", url, "ours", args.out / "ours-bench.json", bench_extra
            )
        with run_orthanc(free_port(), scratch_dir / "orthanc") as orthanc:
            url = f"{orthanc.base_url}/dicom-web"
            results["orthanc-conformance"] = run_json(
                "conformance", url, "orthanc", args.out / "orthanc-conformance.json", ["--no-fail"]
            )
            results["orthanc-bench"] = run_json(
                "conformance.bench", url, "orthanc", args.out / "orthanc-bench.json", bench_extra
            )
    report = "\n\n".join(
        [
            "# Our server and Orthanc, measured in one run",
            f"Command: `python -m conformance.compare{' --quick' if args.quick else ''}`; "
            f"our server with {args.workers} worker(s); Orthanc from Debian's packages; requests "
        "without HTTP compression (`Accept-Encoding: identity`), Orthanc's fastest case.",
            "## Conformance",
            compare_markdown(results["ours-conformance"], results["orthanc-conformance"]),
            "## Benchmark",
            bench_markdown(results["ours-bench"], results["orthanc-bench"]),
        ]
    )
    (args.out / "comparison.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
