"""`dicomweb import`: files, folders and zips through the STOW path, summary and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import requests
from conftest import free_port, start_server, stop_server
from factory import image, to_bytes


def run_import(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", "import", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_folder_zip_and_bad_files(tmp_path, backend):
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    datasets = [image(instance_number=i) for i in range(4)]
    (source / "a.dcm").write_bytes(to_bytes(datasets[0]))
    (source / "nested" / "b.dcm").write_bytes(to_bytes(datasets[1]))
    (source / "notes.txt").write_text("not dicom")
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as archive:
        archive.writestr("x/c.dcm", to_bytes(datasets[2]))
        archive.writestr("d.dcm", to_bytes(datasets[3]))
    data = tmp_path / "data"
    database = ["--database-url", backend] if backend else []
    result = run_import(str(source), str(tmp_path / "archive.zip"), "--data", str(data), *database)
    assert result.returncode == 1  # notes.txt failed
    assert "stored: 4, duplicates: 0, failed: 1" in result.stdout
    assert "notes.txt" in result.stdout and "0xC000" in result.stdout
    assert "import" in result.stderr  # the progress bar

    again = run_import(str(source / "a.dcm"), "--data", str(data), *database)
    assert again.returncode == 0
    assert "stored: 0, duplicates: 1, failed: 0" in again.stdout

    server = start_server(data, backend)
    try:
        for ds in datasets:
            response = requests.get(
                f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}",
                headers={"Accept": "application/dicom; transfer-syntax=*"},
                timeout=30,
            )
            assert response.content == to_bytes(ds)
    finally:
        stop_server(server)


def test_zip_bomb_and_bad_crc_members_fail_alone(tmp_path, backend):
    good = [image(instance_number=i) for i in range(2)]
    archive_path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good0.dcm", to_bytes(good[0]))
        archive.writestr("bomb.dcm", b"\x00" * (64 << 20))  # ~64 KB inflating 1000 times
        archive.writestr("crc.dcm", to_bytes(image()))
        archive.writestr("good1.dcm", to_bytes(good[1]))
    # Damage crc.dcm's stored CRC-32 (local header and central directory) so that reading it
    # fails at its end, as a corrupted archive does.
    data = bytearray(archive_path.read_bytes())
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo("crc.dcm")
    crc = info.CRC.to_bytes(4, "little")
    assert data.count(crc) == 2
    data[:] = data.replace(crc, bytes(b ^ 0xFF for b in crc))
    archive_path.write_bytes(bytes(data))

    database = ["--database-url", backend] if backend else []
    result = run_import(str(archive_path), "--data", str(tmp_path / "data"), "--no-progress",
                        *database)
    assert result.returncode == 1
    assert "stored: 2, duplicates: 0, failed: 2" in result.stdout, result.stdout
    assert "bomb.dcm: the archive member inflates more than 200 times" in result.stdout
    assert "crc.dcm: the archive member is damaged" in result.stdout
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "data" / "blobs" / ".tmp").iterdir()) == []


def test_damaged_archive_is_one_failure(tmp_path, backend):
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:
        archive.writestr("x.dcm", to_bytes(image()))
    data = (tmp_path / "broken.zip").read_bytes()  # its central directory entry is damaged
    (tmp_path / "broken.zip").write_bytes(data.replace(b"PK\x01\x02", b"PK\x09\x09"))
    (tmp_path / "a.dcm").write_bytes(to_bytes(image()))
    database = ["--database-url", backend] if backend else []
    result = run_import(str(tmp_path / "broken.zip"), str(tmp_path / "a.dcm"),
                        "--data", str(tmp_path / "data"), "--no-progress", *database)
    assert "stored: 1, duplicates: 0, failed: 1" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def stored_count(server, outcome: str) -> float:
    text = requests.get(f"{server.origin}/metrics", timeout=30).text
    line = f'dicomweb_instances_stored_total{{outcome="{outcome}"}} '
    return sum(float(row[len(line):]) for row in text.splitlines() if row.startswith(line))


def test_local_import_says_which_store_it_writes(tmp_path):
    (tmp_path / "a.dcm").write_bytes(to_bytes(image()))
    data = tmp_path / "data"
    result = run_import(str(tmp_path / "a.dcm"), "--data", str(data), "--no-progress")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"importing into {data} (SQLite index.sqlite, blobs/)"

    url = "postgresql+psycopg://dicom:s3cret@127.0.0.1:1/pacs"
    failed = run_import(str(tmp_path / "a.dcm"), "--database-url", url)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("error: cannot connect to the database postgresql+psycopg://"
                                    "dicom:***@127.0.0.1:1/pacs: ")
    assert "s3cret" not in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_import_through_a_running_server(tmp_path, server):
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    datasets = [image(instance_number=i) for i in range(70)]  # three batches, sent at once
    for i, ds in enumerate(datasets[:60]):
        (source / ("nested" if i % 2 else "") / f"{i}.dcm").write_bytes(to_bytes(ds))
    with zipfile.ZipFile(source / "archive.zip", "w") as archive:
        for i, ds in enumerate(datasets[60:]):
            archive.writestr(f"z/{i}.dcm", to_bytes(ds))
    (source / "notes.txt").write_text("not dicom")

    # An interrupted import: only the first ten files got there.
    first = run_import(*[str(source / f"{i}.dcm") for i in range(0, 20, 2)], "--url", server.url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == f"importing into {server.url} (STOW-RS)"
    assert "stored: 10, duplicates: 0, failed: 0" in first.stdout

    duplicates_before = stored_count(server, "duplicate")
    result = run_import(str(source), "--url", server.url)
    assert result.returncode == 1  # notes.txt failed
    assert "stored: 60, duplicates: 10, failed: 1" in result.stdout
    assert "notes.txt: 0xC000" in result.stdout
    assert (result.stdout + result.stderr).count("notes.txt") == 1  # each failure said once
    assert "import" in result.stderr  # the progress bar
    # The ten already there were skipped by the check, never sent again.
    assert stored_count(server, "duplicate") == duplicates_before

    again = run_import(str(source), "--url", server.url + "/", "--no-progress")
    assert "stored: 0, duplicates: 70, failed: 1" in again.stdout
    for ds in (datasets[1], datasets[65]):
        response = requests.get(
            f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
            headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
        assert response.content == to_bytes(ds)


def test_import_to_a_server_that_is_not_there(tmp_path):
    (tmp_path / "a.dcm").write_bytes(to_bytes(image()))
    result = run_import(str(tmp_path / "a.dcm"), "--url", f"http://127.0.0.1:{free_port()}/dicomweb")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(": Connection refused")
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach http://127.0.0.1:")


def create_api_key(data, name: str, scopes: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", "apikey", "create", "--name", name,
         "--scopes", scopes, "--data", str(data)],
        capture_output=True, text=True, timeout=120, check=True)
    return made.stdout.strip()


def test_import_through_an_authenticated_server(tmp_path):
    """Once an API key exists the server wants credentials: --token / DICOMWEB_TOKEN."""
    data = tmp_path / "data"
    key = create_api_key(data, "gateway", "dicomweb:read,dicomweb:write")
    server = start_server(data, None)
    try:
        (tmp_path / "a.dcm").write_bytes(to_bytes(image()))
        refused = run_import(str(tmp_path / "a.dcm"), "--url", server.url)
        assert refused.returncode == 1
        assert refused.stderr.splitlines()[-1].startswith(f"error: {server.url}: HTTP 401 ")
        assert "--token or DICOMWEB_TOKEN" in refused.stderr

        with_option = run_import(str(tmp_path / "a.dcm"), "--url", server.url, "--token", key)
        assert "stored: 1, duplicates: 0, failed: 0" in with_option.stdout
        from_env = subprocess.run(
            [sys.executable, "-m", "dicomweb.cli", "import", str(tmp_path / "a.dcm"),
             "--url", server.url], capture_output=True, text=True, timeout=300,
            env={**os.environ, "DICOMWEB_TOKEN": key})
        assert "stored: 0, duplicates: 1, failed: 0" in from_env.stdout
        assert key not in with_option.stdout + with_option.stderr + server.log()

        # A key that may store but not search: nothing to skip by, everything is sent.
        writer = create_api_key(data, "modality", "dicomweb:write")
        (tmp_path / "b.dcm").write_bytes(to_bytes(image()))
        write_only = run_import(str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm"),
                                "--url", server.url, "--token", writer)
        assert "stored: 2, duplicates: 0, failed: 0" in write_only.stdout, write_only.stderr
    finally:
        stop_server(server)


def test_a_member_found_damaged_while_sent_fails_alone_through_a_server(tmp_path, server):
    """A bad CRC shows only when a member's end is read: for a member of more than one read
    (1 MiB) that is in the middle of its STOW request, which formerly ended the whole import
    with a traceback. Now the request's members are sent again one by one."""
    good = [image(instance_number=i) for i in range(3)]
    archive_path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good0.dcm", to_bytes(good[0]))
        archive.writestr("crc.dcm", to_bytes(image(rows=1024, columns=1024)))  # 2 MiB
        archive.writestr("good1.dcm", to_bytes(good[1]))
    data = bytearray(archive_path.read_bytes())
    with zipfile.ZipFile(archive_path) as archive:
        crc = archive.getinfo("crc.dcm").CRC.to_bytes(4, "little")
    assert data.count(crc) == 2
    archive_path.write_bytes(bytes(data.replace(crc, bytes(b ^ 0xFF for b in crc))))
    (tmp_path / "good2.dcm").write_bytes(to_bytes(good[2]))

    result = run_import(str(archive_path), str(tmp_path / "good2.dcm"),
                        str(tmp_path / "missing.dcm"), "--url", server.url, "--no-progress")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "stored: 3, duplicates: 0, failed: 2" in result.stdout, result.stdout
    assert "crc.dcm: the archive member is damaged (bad CRC or compression)" in result.stdout
    assert "missing.dcm: does not exist" in result.stdout
