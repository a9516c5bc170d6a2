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
