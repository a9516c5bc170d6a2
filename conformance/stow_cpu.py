"""Server CPU per STOW instance over HTTP (`dicomweb serve` with its defaults, from /proc):
the server process and its ingest processes apart, a figure a loaded machine changes far
less than the upload rate.

    python -m conformance.stow_cpu [--kind small|rt] [--studies 300] [--mr-slices 96]
                                   [--clients 4] [--py-spy out.txt] [-- serve options]

The bodies are encoded before the upload starts; a warm-up batch is sent first (the ingest
processes start on the first upload). `--py-spy` records the server process meanwhile
(`py-spy record --format raw`, folded stacks for a flame graph or a grep).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from conformance import benchdata
from conformance.bench import STOW_BATCH_SIZE, encode_multipart, stow_failures
from conformance.compare import run_ours_process
from conformance.cpu_per_request import process_cpu_seconds


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def tree_cpu(pid: int) -> tuple[float, float]:
    """(the process's CPU seconds, its live descendants' CPU seconds)."""
    others = 0.0
    pending = children(pid)
    while pending:
        child = pending.pop()
        try:
            others += process_cpu_seconds(child)
            pending += children(child)
        except FileNotFoundError:
            continue
    return process_cpu_seconds(pid), others


def bodies(kind: str, studies: int, mr_slices: int) -> list[tuple[bytes, str, int]]:
    if kind == "small":
        data = [i.data for s in range(studies) for i in benchdata.small_study(s)]
    else:
        data = [i.data for i in benchdata.rt_study(mr_slices)]
    batches = [data[i : i + STOW_BATCH_SIZE] for i in range(0, len(data), STOW_BATCH_SIZE)]
    return [(*encode_multipart(b, "application/dicom"), len(b)) for b in batches]


def upload(url: str, batches: list[tuple[bytes, str, int]], clients: int) -> None:
    def post(batch: tuple[bytes, str, int]) -> None:
        body, content_type, _ = batch
        response = requests.post(f"{url}/studies", data=body, timeout=600,
                                 headers={"Content-Type": content_type,
                                          "Accept": "application/dicom+json"})
        if response.status_code != 200 or stow_failures(response):
            raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("small", "rt"), default="small")
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--mr-slices", type=int, default=96)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--py-spy", type=Path, dest="py_spy")
    parser.add_argument("serve", nargs="*", help="options added to `dicomweb serve`")
    args = parser.parse_args(argv)
    batches = bodies(args.kind, args.studies, args.mr_slices)
    # other UIDs than the run's (small studies from index 1,000,000 on)
    warm_up = [(*encode_multipart([i.data for i in benchdata.small_study(1_000_000)],
                                  "application/dicom"), 1)]
    with tempfile.TemporaryDirectory() as folder, \
            run_ours_process(Path(folder), args.serve) as (url, pid):
        upload(url, warm_up, 1)
        time.sleep(2)  # the ingest processes have started
        spy = None
        if args.py_spy:
            # --gil: where the server process's Python time goes, not its waits on the disk
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                 "--nonblocking", "--gil", "--rate", "250", "-p", str(pid), "-o", str(args.py_spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        server_before, pool_before = tree_cpu(pid)
        started = time.perf_counter()
        upload(url, batches, args.clients)
        wall = time.perf_counter() - started
        server_after, pool_after = tree_cpu(pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
    count = sum(n for *_, n in batches)
    server_ms = (server_after - server_before) * 1e3 / count
    pool_ms = (pool_after - pool_before) * 1e3 / count
    print(f"{args.kind}: {count} instances, {args.clients} client(s), {count / wall:.0f} inst/s; "
          f"server CPU per instance: process {server_ms:.3f} ms, ingest processes "
          f"{pool_ms:.3f} ms, total {server_ms + pool_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
