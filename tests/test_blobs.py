"""The blob folder: keys that cannot lead outside it, and temp files swept only when their
writer is dead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomweb.store.blobs import BlobStore

ANY_TEXT = st.text(min_size=0, max_size=80)
UID_LIKE = st.from_regex(r"[0-9A-Za-z._-]{1,64}", fullmatch=True) | st.sampled_from(
    ["..", ".", "../..", "...", "-", "_"]
)


def new_blob_store(root: Path) -> BlobStore:
    """A blob store with its folders (the constructor creates nothing)."""
    blobs = BlobStore(root)
    blobs.create_folders()
    return blobs


@settings(max_examples=300, deadline=None)
@given(study=ANY_TEXT | UID_LIKE, series=ANY_TEXT | UID_LIKE, sop=ANY_TEXT | UID_LIKE)
def test_no_uid_can_place_a_blob_outside_the_folder(
    tmp_path_factory: pytest.TempPathFactory, study: str, series: str, sop: str
) -> None:
    root = tmp_path_factory.getbasetemp() / "keys"
    blobs = BlobStore(root)
    key = blobs.new_key(study, series, sop)
    target = blobs.path(key).resolve()
    assert target.is_relative_to(root.resolve())
    assert len(target.relative_to(root.resolve()).parts) == 3
    assert ".." not in key and not key.startswith("/")


KEY_TEXT = st.lists(st.sampled_from(["a", "1.2", "..", ".", "", "b.dcm", "/"]), max_size=6).map(
    "/".join) | ANY_TEXT


@settings(max_examples=500, deadline=None)
@given(key=KEY_TEXT)
def test_file_name_is_path_as_text_and_refuses_the_same_keys(tmp_path_factory, key: str):
    """`file_name` (the retrieve's open, without pathlib) follows `path`'s rule exactly."""
    blobs = BlobStore(tmp_path_factory.getbasetemp() / "names")
    try:
        expected: str | None = str(blobs.path(key))
    except FileNotFoundError:
        expected = None
    try:
        found: str | None = blobs.file_name(key)
    except FileNotFoundError:
        found = None
    assert (found is None) == (expected is None)
    if found is not None:
        assert Path(found) == Path(expected)


def test_a_uid_of_dot_dot_is_stored_inside(tmp_path: Path) -> None:
    blobs = new_blob_store(tmp_path / "blobs")
    temp = blobs.new_temp_path()
    temp.write_bytes(b"data")
    key = blobs.new_key("..", "..", "..")
    blobs.commit(temp, key)
    inside = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert inside == [blobs.path(key)]
    assert [p for p in tmp_path.iterdir() if p.is_file()] == []


def test_keys_of_older_versions_stay_readable_and_escaping_ones_are_refused(
    tmp_path: Path,
) -> None:
    blobs = new_blob_store(tmp_path / "blobs")
    old_key = "1.2.3/4.5.6/7.8.9.abcdef012345.dcm"
    blobs.path(old_key).parent.mkdir(parents=True)
    blobs.path(old_key).write_bytes(b"old layout")
    assert b"".join(blobs.iter_file(old_key)) == b"old layout"
    (tmp_path / "outside.dcm").write_bytes(b"keep me")
    with pytest.raises(FileNotFoundError):
        blobs.path("../outside.dcm")
    blobs.remove("../outside.dcm")
    assert (tmp_path / "outside.dcm").read_bytes() == b"keep me"


def make_old(path: Path) -> None:
    past = time.time() - 3600
    os.utime(path, (past, past))


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_sweep_removes_orphans_only(tmp_path: Path) -> None:
    blobs = new_blob_store(tmp_path / "blobs")
    orphan = blobs.tmp_dir / "dead.part"  # no process holds its lock: its writer died
    orphan.write_bytes(b"x")
    make_old(orphan)
    young = blobs.tmp_dir / "just-created.part"
    young.write_bytes(b"y")
    live_elsewhere = blobs.tmp_dir / "other-worker.part"
    live_elsewhere.write_bytes(b"z")
    make_old(live_elsewhere)
    mine = blobs.new_temp_path()
    make_old(mine)
    writer = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(live_elsewhere)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        assert blobs.sweep_temp_files() == 1
        assert not orphan.exists()
        assert young.exists() and live_elsewhere.exists() and mine.exists()
    finally:
        writer.kill()
        writer.wait()
    assert blobs.sweep_temp_files() == 1  # its writer is dead now
    assert not live_elsewhere.exists() and mine.exists()
    blobs.discard(mine)
    assert not mine.exists()


def test_sweep_drops_locks_of_temp_files_removed_by_others(tmp_path: Path) -> None:
    blobs = new_blob_store(tmp_path / "blobs")
    path = blobs.new_temp_path()
    path.unlink()
    blobs.sweep_temp_files()
    assert path not in blobs._temp_locks


@pytest.mark.parametrize("writeback", ["sync_file_range", "threads"])
def test_a_batch_commit_syncs_every_file_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writeback: str
) -> None:
    """Crash consistency of a STOW batch: each file's data is on disk (fdatasync of that
    file) before it is renamed into place, with writeback started for all at once or with
    the fdatasyncs in threads; files this process did not create (DIMSE receives) too."""
    from dicomweb.store import blobs as module

    blobs = new_blob_store(tmp_path)
    events: list[tuple[str, int]] = []
    real_fdatasync, real_replace = os.fdatasync, os.replace

    def fdatasync(fd: int) -> None:
        events.append(("sync", os.fstat(fd).st_ino))
        real_fdatasync(fd)

    def replace(source: Path, target: Path) -> None:
        events.append(("rename", os.stat(source).st_ino))
        real_replace(source, target)

    monkeypatch.setattr(module.os, "fdatasync", fdatasync)
    monkeypatch.setattr(module.os, "replace", replace)
    if writeback == "threads":
        monkeypatch.setattr(module, "START_WRITEBACK", None)
    temps = [blobs.new_temp_path() for _ in range(5)]
    for number, temp in enumerate(temps):
        with blobs.open_temp(temp) as fp:
            fp.write(b"instance %d" % number)
    received = tmp_path / ".tmp" / "received.dcm"  # not a temp file of this store's making
    received.write_bytes(b"received")
    temps.append(received)
    keys = [blobs.new_key("1.2", "1.2.3", f"1.2.3.{n}") for n in range(len(temps))]
    blobs.commit_many(list(zip(temps, keys, strict=True)))
    synced: set[int] = set()
    for event, inode in events:
        if event == "sync":
            synced.add(inode)
        else:
            assert inode in synced, "a file was renamed before its fdatasync"
    assert len(synced) == len(temps)
    assert [blobs.path(k).read_bytes() for k in keys[:2]] == [b"instance 0", b"instance 1"]
