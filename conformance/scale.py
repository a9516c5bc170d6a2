"""Per-request cost as the store grows: QIDO study list, PatientID lookup, series metadata
and one frame at 10 k, 100 k and 1 M instances, on SQLite and on PostgreSQL.

    python -m conformance.scale [--sizes 10000,100000,1000000] [--database-url URL]
                                [--json out.json]

The index is filled through the store's own bulk path (`Store.index_existing`, the batch
insert STOW uses): one small instance (a 64×64 CT of the benchmark) is parsed by ingest once,
and each new instance is that row with new UIDs, in studies of 4 instances (one series) and
two studies per patient. All instances share that one small blob, so filling a million takes
minutes, not hours; reads go through a real `dicomweb serve` on 127.0.0.1 over HTTP.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from conformance import bench, benchdata
from conformance.compare import run_ours_process
from dicomweb.config import Settings
from dicomweb.ingest import IngestedInstance, ingest_file
from dicomweb.store.repository import Store

INSTANCES_PER_STUDY = 4
BATCH = 2000
ROOT = "1.2.826.0.1.3680043.10.1311.78"  # scale data: ".78"
PROBE_REPEATS = 40


@dataclass
class Probe:
    """p50 latency (ms) and server CPU per request (ms, all its processes) of each probe."""

    instances: int
    fill_seconds: float
    study_list_ms: float | None
    patient_id_ms: float | None
    series_metadata_ms: float | None
    frame_ms: float | None
    cpu_ms: dict[str, float | None] = field(default_factory=dict)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (Linux /proc): unlike latency, it does
    not grow when other programs load the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry.name == str(pid) or fields[1] == str(pid):  # the server or its child
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Template:
    """One parsed instance whose rows are copied under new UIDs."""

    def __init__(self, store: Store) -> None:
        source = benchdata.small_study(0)[0]
        path = store.blobs.new_temp_path()
        path.write_bytes(source.data)
        parsed = ingest_file(path)
        self.key = f"scale/{uuid.uuid4().hex}.dcm"
        store.blobs.commit(path, self.key)
        self.parsed = replace(parsed, dataset=None, file_path=store.blobs.path(self.key))
        self.uids = (parsed.study_instance_uid, parsed.series_instance_uid,
                     parsed.sop_instance_uid)
        self.patient_id = parsed.patient_row["patient_id"]
        self.study_date = parsed.study_row["study_date"]

    def instance(self, index: int) -> IngestedInstance:
        study_index, number = divmod(index, INSTANCES_PER_STUDY)
        study = f"{ROOT}.{study_index}"
        series, sop = f"{study}.1", f"{study}.1.{number + 1}"
        patient_id = f"SCALE{study_index // 2:07d}"
        # Dates spread over 2000-2027 (about 25 studies a day at a million instances).
        day = study_index % 10_000
        date = f"{2000 + day // 360:04d}{1 + day // 30 % 12:02d}{1 + day % 30:02d}"
        swaps = [(self.uids[2], sop), (self.uids[1], series), (self.uids[0], study),
                 (self.patient_id, patient_id), (self.study_date, date)]

        def swapped(value: Any) -> Any:
            if isinstance(value, bytes):
                for old, new in swaps:
                    value = value.replace(old.encode(), new.encode())
            elif isinstance(value, str):
                for old, new in swaps:
                    value = value.replace(old, new)
            return value

        def row(values: dict[str, Any]) -> dict[str, Any]:
            return {k: swapped(v) for k, v in values.items()}

        parsed = self.parsed
        return replace(
            parsed, sop_instance_uid=sop, study_instance_uid=study, series_instance_uid=series,
            patient_row=row(parsed.patient_row), study_row=row(parsed.study_row),
            series_row=row(parsed.series_row),
            instance_row={**row(parsed.instance_row), "instance_number": number + 1},
        )


def fill(store: Store, template: Template, start: int, stop: int) -> float:
    started = time.perf_counter()
    for first in range(start, stop, BATCH):
        last = min(stop, first + BATCH)
        items = [(template.instance(i), template.key) for i in range(first, last)]
        store.index_existing(items)
        done = min(stop, first + BATCH)
        if done % 50_000 == 0 or done == stop:
            print(f"[scale] {done:,} instances indexed", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def analyze(store: Store) -> None:
    """Planner statistics after the bulk load, as PostgreSQL's autovacuum gathers them a
    moment later (and `ANALYZE` gives SQLite's planner); without them a planner that still
    believes the tables small may scan a million rows."""
    from sqlalchemy import text

    with store.engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def probe(url: str, pid: int, size: int, fill_seconds: float) -> Probe:
    session = bench.make_session()
    middle = size // INSTANCES_PER_STUDY // 2
    study = f"{ROOT}.{middle}"
    paths = {
        "study_list": "studies?limit=101&offset=0&fuzzymatching=true"
                      "&includefield=00081030%2C00080060%2C00080090%2C00100030",
        "patient_id": f"studies?00100020=SCALE{middle // 2:07d}",
        "series_metadata": f"studies/{study}/series/{study}.1/metadata",
        "frame": f"studies/{study}/series/{study}.1/instances/{study}.1.2/frames/1",
    }
    found: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    for name, path in paths.items():
        accept = bench.FRAME_ACCEPT if name == "frame" else bench.DICOM_JSON
        before = process_cpu_seconds(pid)
        result = bench.measure_latency(name, session, url, path, accept, PROBE_REPEATS, 10.0)
        used = process_cpu_seconds(pid) - before
        found[name] = result.p50_ms if result.supported else None
        cpu[name] = round(used * 1000 / result.repeats, 2) if result.repeats and used else None
    return Probe(size, round(fill_seconds, 1), found["study_list"], found["patient_id"],
                 found["series_metadata"], found["frame"], cpu)


def markdown(backend: str, probes: list[Probe]) -> str:
    """p50 latency of each probe (the server's CPU per request is in the JSON: at low request
    rates its idle timers weigh in, so it is a rough guide only)."""
    lines = [f"| {backend}: instances | OHIF study list | PatientID lookup | series metadata "
             "| one frame | fill time |", "|---|---|---|---|---|---|"]
    for p in probes:
        latencies = (p.study_list_ms, p.patient_id_ms, p.series_metadata_ms, p.frame_ms)
        cells = [f"{p.instances:,}"]
        for value in latencies:
            cells.append(f"{value:.1f} ms" if value is not None else "n/a")
        cells.append(f"{p.fill_seconds:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--database-url", help="PostgreSQL URL of an empty database")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backend = "PostgreSQL" if args.database_url else "SQLite"
    probes: list[Probe] = []
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        data = Path(scratch)
        store = Store(Settings(data_dir=data, database_url=args.database_url))
        store.create_schema()
        template = Template(store)
        indexed = 0
        for size in sizes:
            seconds = fill(store, template, indexed, size)
            indexed = size
            analyze(store)
            extra = ["--database-url", args.database_url] if args.database_url else []
            with run_ours_process(data, extra) as (url, pid):
                bench.measure_latency("warm", bench.make_session(), url, "studies?limit=1",
                                      bench.DICOM_JSON, 3, 1.0)
                probes.append(probe(url, pid, size, seconds))
            print(markdown(backend, probes[-1:]), file=sys.stderr, flush=True)
        store.close()
    print(markdown(backend, probes))
    if args.json:
        args.json.write_text(orjson.dumps([asdict(p) for p in probes]).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
