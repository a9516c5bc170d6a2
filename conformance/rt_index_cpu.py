"""CPU of storing each RT object of the benchmark's RT study (RTSTRUCT, RTPLAN, RTDOSE, REG):
the ingest worker's parse and the server process's store apart, in this process.

    python -m conformance.rt_index_cpu [--rounds 5] [--source DIR]

Each object is parsed by the ingest pool's worker function and its result pickled and
unpickled, as between the processes; the server process's part is the thread CPU of
`Store.store_parsed` (blob commit, index transaction, RT rows). Minimum of the rounds, each on
a fresh SQLite store with fresh UIDs. Run it with PYTHONPATH=DIR to measure another checkout.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import tempfile
import time
from pathlib import Path

from conformance import benchdata, generate
from dicomweb.config import Settings
from dicomweb.ingest_pool import _parse_in_worker, _rejection
from dicomweb.part10 import InflateLimits
from dicomweb.store.repository import Store


def one_round(seed_slices: int) -> dict[str, tuple[float, float]]:
    """Per RT object: (server-process ms, worker ms)."""
    rt = benchdata.rt_study_context(seed_slices)
    objects = {"RTSTRUCT": generate.rtstruct_dataset(rt), "RTPLAN": generate.rtplan_dataset(rt),
               "RTDOSE": generate.rtdose_dataset(rt), "REG": generate.reg_dataset(rt)}
    folder = Path(tempfile.mkdtemp(prefix="rt-index-cpu-"))
    store = Store(Settings(data_dir=folder / "data"))
    store.create_schema()
    found: dict[str, tuple[float, float]] = {}
    try:
        for kind, ds in objects.items():
            path = store.blobs.tmp_dir / f"{kind}.dcm"
            path.write_bytes(benchdata._encode(ds))
            worker = time.process_time()
            values = _parse_in_worker([str(path)], None, InflateLimits())
            (value,) = pickle.loads(pickle.dumps(values))
            worker = time.process_time() - worker
            server = time.thread_time()
            (outcome,) = store.store_parsed([path], [_rejection(value)])
            server = time.thread_time() - server
            if getattr(outcome, "outcome", None) != "stored":
                raise RuntimeError(f"{kind} not stored: {outcome}")
            found[kind] = (server * 1e3, worker * 1e3)
    finally:
        store.close()
        shutil.rmtree(folder)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rounds = [one_round(8 + i) for i in range(args.rounds)]
    for kind in rounds[0]:
        server = min(r[kind][0] for r in rounds)
        worker = min(r[kind][1] for r in rounds)
        print(f"{kind}: server process {server:.1f} ms, ingest worker {worker:.1f} ms "
              f"(min of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
