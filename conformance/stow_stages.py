"""CPU time of STOW's stages in-process, per instance: the multipart reader, the parse an
ingest process does, and the store's batch commit (fdatasync, renames, index transaction).

    python -m conformance.stow_stages [--kind small|rt] [--studies 200] [--mr-slices 96] [--reps 5]

CPU time (min of the repetitions), not wall time, so that an A/B on a shared machine means
something: run it in two checkouts and compare the lines.
"""

from __future__ import annotations

import argparse
import asyncio
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


def measure(data: list[bytes], reps: int) -> dict[str, float]:
    body, content_type = encode_multipart(data, "application/dicom")
    boundary = content_type.split("boundary=")[1].strip('"')
    best: dict[str, float] = {}

    def timed(stage: str, run: Callable[[], Any]) -> Any:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("small", "rt"), default="small")
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--mr-slices", type=int, default=96)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    data = instances(args.kind, args.studies, args.mr_slices)
    best = measure(data, args.reps)
    print(f"{args.kind}: {len(data)} instances; ms CPU per instance (min of {args.reps}): "
          + ", ".join(f"{stage} {value:.3f}" for stage, value in best.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
