"""`dicomweb import`: files, folders and zips through the STOW path, summary and exit code."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import requests
from conftest import start_server, stop_server
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
