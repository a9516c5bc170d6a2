"""CPU time of STOW's stages in-process, per instance: the multipart reader, the parse an
ingest process does, and the store's batch commit (fdatasync, renames, index transaction).

    python -m conformance.stow_stages [--kind small|rt] [--studies 200] [--mr-slices 96] [--reps 5]
    python -m conformance.stow_stages --instructions [--source DIR] [--kind …]

CPU time (min of the repetitions), not wall time, so that an A/B on a shared machine means
something: run it in two checkouts and compare the lines. On a loaded machine even CPU time
moves (by 2x at a load of 5): `--instructions` counts each stage's user-space instructions
under valgrind's callgrind instead (one repetition, ~1 % apart between runs; the kernel's
part, file creation and fdatasync, is not in it). `--source` runs another checkout's code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from conformance import benchdata
from conformance.bench import encode_multipart
from dicomweb.app import create_app
from dicomweb.config import Settings
from dicomweb.ingest import parse_part
from dicomweb.multipart import read_parts, spill
from dicomweb.store.database import create_schema
from dicomweb.stow import BATCH_SIZE, SPOOL_PART_BYTES


def instances(kind: str, studies: int, mr_slices: int) -> list[bytes]:
    if kind == "small":
        return [i.data for s in range(studies) for i in benchdata.small_study(s)]
    return [i.data for i in benchdata.rt_study(mr_slices)]


def measure(data: list[bytes], reps: int, counted: str = "") -> dict[str, float]:
    body, content_type = encode_multipart(data, "application/dicom")
    boundary = content_type.split("boundary=")[1].strip('"')
    best: dict[str, float] = {}

    def timed(stage: str, run: Callable[[], Any]) -> Any:
        if counted:  # under callgrind: instrumented during the stage `counted` only
            if stage == counted:
                callgrind("--instr", "on")
            result = run()
            if stage == counted:
                callgrind("--instr", "off")
            return result
        started = time.process_time()
        result = run()
        per_instance = (time.process_time() - started) * 1e3 / len(data)
        best[stage] = min(best.get(stage, per_instance), per_instance)
        return result

    for _ in range(reps):
        with tempfile.TemporaryDirectory() as folder:
            one_run(Path(folder), body, boundary, len(data), timed)
    return best


def one_run(folder: Path, body: bytes, boundary: str, count: int,
            timed: Callable[[str, Callable[[], Any]], Any]) -> None:
    store = create_app(Settings(data_dir=folder)).state.store
    create_schema(store.engine, store.extension_tables)
    store.blobs.create_folders()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async def receive() -> list:
        return [p async for p in read_parts(chunks(), boundary, store.blobs,
                                            max_parts=count + 1, spool_bytes=SPOOL_PART_BYTES)]

    def receive_and_spill() -> list:
        parts = asyncio.run(receive())
        spill(parts, store.blobs)
        return parts

    paths = [p.path for p in timed("multipart", receive_and_spill)]
    parsed = timed("parse", lambda: [parse_part(p) for p in paths])
    for instance in parsed:
        instance.dataset = None  # as it comes back from an ingest process

    def commit() -> list:
        return [outcome for i in range(0, len(paths), BATCH_SIZE)
                for outcome in store.store_parsed(paths[i : i + BATCH_SIZE],
                                                  parsed[i : i + BATCH_SIZE])]

    outcomes = timed("store", commit)
    assert all(getattr(o, "outcome", None) == "stored" for o in outcomes), outcomes[:3]
    store.engine.dispose()


def callgrind(*options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True,
                   capture_output=True)


STAGES = ("multipart", "parse", "store")


def count_instructions(source: Path, kind: str, studies: int, mr_slices: int) -> dict[str, float]:
    """Millions of instructions of each stage, this file run in `source`'s code under
    callgrind (one run per stage: the count of the instrumented stretch is exact)."""
    counts: dict[str, float] = {}
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONMALLOC": "malloc"}
    for stage in STAGES:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             "--callgrind-out-file=/dev/null", sys.executable,
             str(Path(__file__).resolve()), "--child", stage, "--kind", kind, "--studies",
             str(studies), "--mr-slices", str(mr_slices)],
            env=env, cwd=source, capture_output=True, text=True, timeout=3600,
        )
        found = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind run failed: {result.stderr[-800:]}")
        counts[stage] = int(found[1]) / 1e6
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("small", "rt"), default="small")
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--mr-slices", type=int, default=96)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = instances(args.kind, args.studies, args.mr_slices)
    if args.child:
        measure(data, 1, counted=args.child)
        return 0
    if args.instructions:
        counts = count_instructions(args.source.resolve(), args.kind, args.studies,
                                    args.mr_slices)
        print(f"{args.source}: {args.kind}: {len(data)} instances; M instructions per instance: "
              + ", ".join(f"{stage} {value / len(data):.3f}" for stage, value in counts.items()))
        return 0
    best = measure(data, args.reps)
    print(f"{args.kind}: {len(data)} instances; ms CPU per instance (min of {args.reps}): "
          + ", ".join(f"{stage} {value:.3f}" for stage, value in best.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
