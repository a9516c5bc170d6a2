"""Parsing STOW parts in worker processes (dicomweb/ingest_pool.py): the same values as
parsing in the server process, rejections with their PS3.18 reason, the order kept."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from conftest import start_server
from factory import image, to_bytes

from dicomweb.errors import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS, InstanceRejected
from dicomweb.ingest import IngestedInstance, parse_part
from dicomweb.ingest_pool import IngestPool, pool_size


def write_parts(folder: Path) -> list[Path]:
    paths = []
    for index, content in enumerate(
        [to_bytes(image(instance_number=1)), b"not DICOM at all", to_bytes(image()),
         to_bytes(image(study="1.2.3.4"))]
    ):
        path = folder / f"part{index}"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_pool_parses_like_the_server_process(tmp_path: Path) -> None:
    paths = write_parts(tmp_path)
    here = [parse_part(p, None) for p in paths]
    pool = IngestPool(2)
    pool.start()
    deadline = time.monotonic() + 60
    while not pool.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        found = asyncio.run(pool.parse(paths, None))
        bad_study = asyncio.run(pool.parse(paths[3:], "9.9.9"))
    finally:
        pool.close()
    assert [type(f) for f in found] == [type(h) for h in here]
    assert isinstance(found[1], InstanceRejected) and found[1].reason == CANNOT_UNDERSTAND
    for mine, theirs in zip(found, here, strict=True):
        if isinstance(mine, IngestedInstance):
            assert isinstance(theirs, IngestedInstance)
            assert mine.dataset is None and mine.file_path == theirs.file_path
            assert mine.instance_row == theirs.instance_row
            assert mine.study_row == theirs.study_row and mine.series_row == theirs.series_row
    (rejected,) = bad_study
    assert isinstance(rejected, InstanceRejected)
    assert rejected.reason == DATASET_DOES_NOT_MATCH_SOP_CLASS and rejected.sop_instance_uid


def test_workers_have_loaded_what_an_rt_object_needs_before_their_first_part() -> None:
    """numpy imports numpy.ma at the first np.median (a structure set's slice spacing), and
    SQLAlchemy configures its mappers at the first RT index row: 12 and 11-19 ms that fell on
    the first RT batch of each worker, unless done before it starts."""
    pool = IngestPool(1)
    pool.start()
    deadline = time.monotonic() + 60
    while not pool.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert pool.ready
        probe = "sorted(m for m in __import__('sys').modules if m in {})".format(
            ("numpy.ma", "dicomweb.rt.indexing", "dicomweb.rt.serialize", "dicomweb.rt.slabs"))
        executor = pool._executor
        assert executor is not None
        loaded = executor.submit(eval, probe).result(timeout=60)
        # SQLAlchemy configures its mappers at the first mapped object (an RT index row).
        configured = executor.submit(eval, "all(m.configured for m in __import__('sqlmodel')"
                                           ".SQLModel._sa_registry.mappers)").result(timeout=60)
    finally:
        pool.close()
    assert loaded == ["dicomweb.rt.indexing", "dicomweb.rt.serialize", "dicomweb.rt.slabs",
                      "numpy.ma"]
    assert configured


def test_parts_are_parsed_here_until_the_workers_are_up(tmp_path: Path) -> None:
    paths = write_parts(tmp_path)
    pool = IngestPool(1)
    try:
        assert not pool.ready  # not started
        found = asyncio.run(pool.parse(paths[:1], None))
        assert isinstance(found[0], IngestedInstance) and found[0].dataset is not None
    finally:
        pool.close()


def test_pool_size_defaults_to_the_cores() -> None:
    assert pool_size(3) == 3
    assert pool_size(0) >= 1 and pool_size(0, workers=64) == 1


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc's parent links."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_workers_leave_with_a_killed_server(tmp_path: Path) -> None:
    """The workers are forks of a fork server (started with the first upload); SIGKILL on the
    server process tells no one, and still every process it started is gone soon after."""
    server = start_server(tmp_path / "data", None)
    try:
        assert server.stow(image()).status_code == 200
        deadline = time.monotonic() + 30
        pool: set[int] = set()
        while time.monotonic() < deadline:
            pool = {pid for pid in descendants(server.process.pid)
                    if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()}
            if len(pool) >= 3:  # the fork server and its workers (one per core, at least 2 here)
                break
            time.sleep(0.1)
        assert len(pool) >= 2, pool
        started = descendants(server.process.pid)
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while running(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(started)
