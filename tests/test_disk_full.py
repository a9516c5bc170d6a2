"""Disk full during STOW (ENOSPC), on a small filesystem of the test's own: the parts that do
not fit fail with 0xA700 Out of Resources, no partial instance is left, reads go on, and STOW
works again once there is room. Needs root to mount a size-limited tmpfs (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import FAILED, FAILURE_REASON, REFERENCED, image, multipart, stow_items, to_bytes

SIZE = 8 << 20
ACCEPT_AS_STORED = {"Accept": "application/dicom; transfer-syntax=*"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def server_on_small_disk(small_disk: Path, backend: str | None) -> Iterator[Server]:
    running = start_server(small_disk / "data", backend)
    yield running
    stop_server(running)


def fill(disk: Path, leave: int) -> Path:
    """Take all the room of `disk` but `leave` bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as fp:
        fp.truncate(0)
        remaining = max(0, free - leave)
        block = b"\xff" * (1 << 20)
        while remaining > 0:
            remaining -= fp.write(block[: min(remaining, len(block))])
    return filler


def stow(server: Server, datasets: list) -> requests.Response:
    body, content_type = multipart([to_bytes(ds) for ds in datasets])
    return requests.post(f"{server.url}/studies", data=body,
                         headers={"Content-Type": content_type}, timeout=60)


def instance_url(server: Server, ds) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def blob_files(server: Server) -> list[Path]:
    blobs = server.data_dir / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file() and ".tmp" not in p.parts]


def test_disk_full_fails_the_parts_with_0xA700_and_reads_go_on(
    server_on_small_disk: Server, small_disk: Path
) -> None:
    server = server_on_small_disk
    before = [image(), image()]
    assert stow(server, before).status_code == 200
    files_before = blob_files(server)

    filler = fill(small_disk, leave=256 << 10)
    big = [image(rows=512, columns=1024), image(rows=512, columns=1024)]  # 1 MiB each
    response = stow(server, big)
    assert response.status_code == 409, response.text
    failed = stow_items(response.json(), FAILED)
    assert [item[FAILURE_REASON]["Value"][0] for item in failed] == [0xA700, 0xA700]
    assert all("out of disk space" in item["00000902"]["Value"][0] for item in failed)
    assert blob_files(server) == files_before  # no partial instance
    assert list((server.data_dir / "blobs" / ".tmp").glob("*.part")) == []
    for ds in big:
        assert requests.get(instance_url(server, ds), headers=ACCEPT_AS_STORED,
                            timeout=30).status_code == 404

    for ds in before:  # reads keep being served
        response = requests.get(instance_url(server, ds), headers=ACCEPT_AS_STORED, timeout=30)
        assert response.status_code == 200 and response.content == to_bytes(ds)
    search = requests.get(f"{server.url}/instances",
                          params={"SOPInstanceUID": before[0].SOPInstanceUID}, timeout=30)
    assert search.status_code == 200

    filler.unlink()
    again = stow(server, big)
    assert again.status_code == 200, again.text
    assert len(stow_items(again.json(), REFERENCED)) == 2
