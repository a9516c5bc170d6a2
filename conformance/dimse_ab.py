"""A/B of our C-STORE cost: the server's CPU per instance with this checkout's code and with
another commit's, in one run (runs alternate, so the load of a shared machine falls on both).

    python -m conformance.dimse_ab --base COMMIT [--instances 600] [--rounds 6]
                                   [--associations 1]

Both are `dicomweb serve --dimse-port` with its defaults on a fresh data folder each run;
dcmtk's storescu sends the benchmark's small instances (conformance.dimse_bench). CPU is that
of the server's processes during the sends, the figure a loaded machine changes least; the
rates are printed too, as an indication only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from conformance.dimse_bench import RUN_INDEX_STEP, cpu_seconds, run_ours, store, write_instances

REPOSITORY = Path(__file__).resolve().parent.parent


def checkout(commit: str, folder: Path) -> Path:
    """The tree of `commit` (git archive), to run with PYTHONPATH."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def measure(name: str, source: Path | None, folder: Path, paths: list[Path],
            associations: int) -> tuple[float, float]:
    """(ms of server CPU per instance, instances/s) for one run on a fresh store."""
    with run_ours(folder, source, name) as (peer, _):
        store(peer, paths[:5], 1)  # warm-up: imports, first series folders
        before = cpu_seconds(peer.pid)
        seconds = store(peer, paths[5:], associations)
        cpu = cpu_seconds(peer.pid) - before
    count = len(paths) - 5
    return cpu / count * 1000, count / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=6, help="runs of each")
    parser.add_argument("--associations", type=int, default=1)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="dimse-ab-") as scratch:
        root = Path(scratch)
        sources = {"base": checkout(args.base, root / "base-src"), "this": None}
        paths = write_instances(root / "instances", 9 * RUN_INDEX_STEP, args.instances + 5)
        for number in range(args.rounds):
            order = ["base", "this"] if number % 2 == 0 else ["this", "base"]
            for name in order:
                folder = root / f"run{number}-{name}"
                folder.mkdir()
                cpu, rate = measure(name, sources[name], folder, paths, args.associations)
                results[name].append((cpu, rate))
                print(f"  {name:4} {cpu:5.2f} ms CPU per instance, {rate:6.1f} instances/s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    cpu = {name: statistics.median(c for c, _ in runs) for name, runs in results.items()}
    rate = {name: statistics.median(r for _, r in runs) for name, runs in results.items()}
    print(f"\n{args.associations} association(s), median of {args.rounds} runs of "
          f"{args.instances}: CPU per instance {cpu['base']:.2f} ms ({args.base}) → "
          f"{cpu['this']:.2f} ms (this checkout), {cpu['this'] / cpu['base']:.2f}×; "
          f"rate {rate['base']:.0f} → {rate['this']:.0f} instances/s (indicative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
