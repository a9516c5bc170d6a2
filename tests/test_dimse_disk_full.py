"""Disk full during C-STORE (ENOSPC), on a small filesystem of the test's own: the instance
that does not fit gets 0xA700 Out of Resources on an association that goes on, no partial
instance is left, and the next C-STORE with room is stored. Needs root (a size-limited tmpfs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import factory
import pytest
import requests
from conftest import Server, free_port, start_server, stop_server
from dcmtk import peer, requires_dcmtk, run, statuses
from test_disk_full import blob_files, fill, small_disk  # noqa: F401 (fixture)

pytestmark = requires_dcmtk


@pytest.fixture
def dimse_on_small_disk(small_disk: Path, backend: str | None) -> Iterator[tuple[Server, int]]:  # noqa: F811
    port = free_port()
    running = start_server(small_disk / "data", backend, extra=["--dimse-port", str(port)])
    yield running, port
    stop_server(running)


def write(folder: Path, datasets: list) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_disk_full_gets_a700_and_loses_nothing(
    dimse_on_small_disk: tuple[Server, int], small_disk: Path, tmp_path: Path  # noqa: F811
) -> None:
    server, port = dimse_on_small_disk
    study = factory.new_uid()
    small = write(tmp_path / "small", [factory.image(study=study), factory.image(study=study)])
    assert statuses(run("storescu", *peer(port), str(small[0]))) == [0]
    files_before = blob_files(server)

    filler = fill(small_disk, leave=256 << 10)
    big = factory.image(study=study, rows=512, columns=1024)  # 1 MiB
    (big_path,) = write(tmp_path / "big", [big])
    # The big one does not fit; the association goes on.
    output = run("storescu", *peer(port), str(big_path))
    assert statuses(output) == [0xA700], output
    assert blob_files(server) == files_before
    assert list((server.data_dir / "blobs" / ".tmp").glob("dimse-*")) == []
    found = requests.get(f"{server.url}/instances",
                         params={"SOPInstanceUID": big.SOPInstanceUID}, timeout=30)
    assert found.status_code == 204

    filler.unlink()
    output = run("storescu", *peer(port), str(big_path), str(small[1]))
    assert statuses(output) == [0, 0], output
    found = requests.get(f"{server.url}/studies/{study}/instances", timeout=30)
    assert len(found.json()) == 3
