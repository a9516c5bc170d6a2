"""Tests of the DICOMweb benchmark (conformance/bench.py).

* a quick bench run against a private Orthanc (skipped when Orthanc is not installed);
* robustness: a server that supports nothing yields "n/a" rows, not a crash;
* the deterministic bench data generator.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from conformance import bench, benchdata
from conformance.orthanc import ORTHANC_BINARY, free_port, orthanc_available, run_orthanc

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_KEYS = {
    "label",
    "url",
    "config",
    "dataset",
    "stow",
    "qido",
    "metadata",
    "frames",
    "rendered",
    "series_retrieve",
    "ratios",
    "total_seconds",
}


def run_bench_cli(url: str, json_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "conformance.bench", "--url", url, "--json", str(json_path)]
    return subprocess.run(
        [*command, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(
    not orthanc_available(),
    reason=f"{ORTHANC_BINARY} or the DICOMweb plugin is missing "
    "(apt-get install orthanc orthanc-dicomweb)",
)
def test_quick_bench_against_orthanc(tmp_path: Path) -> None:
    json_path = tmp_path / "bench.json"
    with run_orthanc(free_port(), tmp_path / "orthanc-data") as orthanc:
        completed = run_bench_cli(orthanc.dicomweb_url, json_path, "--quick", "--label", "orthanc")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "QIDO" in completed.stdout

    report = json.loads(json_path.read_text())
    assert set(report) >= REPORT_KEYS
    assert report["dataset"]["uploaded_instances"] == 700 + benchdata.RT_CT_SLICES + 100 + 4

    stow_rates = {(r["name"], r["clients"]): r["items_per_s"] for r in report["stow"]}
    assert set(stow_rates) == {("stow small", 1), ("stow small", 4), ("stow rt", 1)}
    assert all(rate and rate > 0 for rate in stow_rates.values())

    qido = {r["name"]: r for r in report["qido"]}
    assert qido["OHIF study list"]["rows"] == 101
    assert qido["MR series instances"]["rows"] == 100
    assert all(r["supported"] and r["p50_ms"] > 0 for r in qido.values())

    assert report["metadata"]["rows"] == 100 and report["metadata"]["p50_ms"] > 0
    frames = [r for r in report["frames"] if r["name"] == "frames"]
    assert [r["clients"] for r in frames] == [1, bench.FRAME_CONCURRENT_CLIENTS]
    assert all(r["items_per_s"] > 0 and r["errors"] == 0 for r in frames)
    assert report["rendered"]["supported"] and report["rendered"]["items_per_s"] > 0
    assert report["series_retrieve"]["mb_per_s"] > 0
    native = report["series_retrieve_native"]
    assert native["mb_per_s"] > 0 if shutil.which("curl") else not native["supported"]
    native = report["rendered_native"]
    assert native["items_per_s"] > 0 if shutil.which("wrk") else not native["supported"]


class NothingSupportedHandler(BaseHTTPRequestHandler):
    """QIDO answers 204 (no match); everything else 404."""

    def do_GET(self) -> None:  # http.server API name
        no_match = self.path.startswith("/dw/studies?") or self.path.endswith("/instances")
        self.send_response(204 if no_match else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # http.server API name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # silence request logging
        return


@pytest.fixture
def nothing_supported_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NothingSupportedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dw"
    finally:
        server.shutdown()
        server.server_close()


def test_unsupported_features_are_na_not_crashes(nothing_supported_url: str, tmp_path: Path):
    json_path = tmp_path / "bench.json"
    small_run = ("--studies", "3", "--mr-slices", "2", "--repeat", "2", "--frame-seconds", "0.2")
    completed = run_bench_cli(nothing_supported_url, json_path, *small_run, "--cleanup")
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(json_path.read_text())
    assert not any(r["supported"] for r in report["stow"])
    assert all(r["rows"] == 0 for r in report["qido"][:5])
    assert not report["metadata"]["supported"]
    assert not any(r["supported"] for r in report["frames"])
    assert not report["rendered"]["supported"]
    assert not report["series_retrieve"]["supported"]
    assert not report["series_retrieve_native"]["supported"]
    assert not report["rendered_native"]["supported"]
    assert "n/a" in completed.stdout


def test_bench_data_is_deterministic_and_valid() -> None:
    first, again = benchdata.small_study(7), benchdata.small_study(7)
    assert [i.data for i in first] == [i.data for i in again]
    assert len(first) == benchdata.instances_in_study(7)
    ds = pydicom.dcmread(io.BytesIO(first[0].data))
    assert ds.PatientID.startswith(benchdata.BENCH_PATIENT_PREFIX)
    assert ds.StudyInstanceUID.startswith(benchdata.BENCH_UID_ROOT)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian

    mr = pydicom.dcmread(io.BytesIO(benchdata.mr_slice(3, 10).data))
    assert mr.pixel_array.shape == (benchdata.MR_SIZE, benchdata.MR_SIZE)
    assert len(mr.PixelData) == 256 * 256 * 2
    assert all(len(uid) <= 64 for uid in (mr.SOPInstanceUID, first[-1].sop_uid))

    rt = benchdata.rt_study(3)
    assert len(rt) == benchdata.RT_CT_SLICES + 3 + 4
    ct = pydicom.dcmread(io.BytesIO(rt[benchdata.RT_CT_SLICES // 2].data))
    assert (ct.Rows, ct.Columns, ct.Modality) == (512, 512, "CT")
    assert ct.PatientID == benchdata.RT_PATIENT_ID
    assert [pydicom.dcmread(io.BytesIO(i.data)).Modality for i in rt[-4:]] == [
        "RTSTRUCT", "RTPLAN", "RTDOSE", "REG"]


def test_multipart_encoding_round_trip() -> None:
    body, content_type = bench.encode_multipart([b"abc", b"\x00\x01"], "application/dicom")
    boundary = content_type.split("boundary=")[1]
    parts = body.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    assert parts[1].endswith(b"\r\n\r\nabc\r\n") and parts[2].endswith(b"\r\n\r\n\x00\x01\r\n")
