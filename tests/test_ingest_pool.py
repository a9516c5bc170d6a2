"""Parsing STOW parts in worker processes (dicomweb/ingest_pool.py): the same values as
parsing in the server process, rejections with their PS3.18 reason, the order kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
