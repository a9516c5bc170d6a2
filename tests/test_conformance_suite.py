"""Tests of the DICOMweb conformance suite (``python -m conformance``).

* a full run against a private Orthanc + DICOMweb plugin (skipped when Orthanc is not
  installed), saving ``conformance/results/orthanc-conformance.{json,md}``;
* ``--compare`` of two result files;
* robustness: a server answering HTML errors yields failures, not a crash;
* the registry, check selection and multipart parsing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conformance.__main__ import main as conformance_main
from conformance.orthanc import ORTHANC_BINARY, free_port, orthanc_available, run_orthanc
from conformance.suite import REGISTRY
from conformance.suite.client import encode_multipart, media_params, split_multipart

REPO_ROOT = Path(__file__).resolve().parents[1]
SUMMARY_RE = re.compile(r"^\d+ passed, \d+ failed, \d+ not supported", re.MULTILINE)

#: Checks Orthanc 1.10.1 + DICOMweb plugin 1.7 is known to pass.
ORTHANC_CORE_PASSES = (
    "stow.store-200",
    "stow.referenced-sop-sequence",
    "qido.search-studies",
    "qido.match-uid",
    "qido.match-single-value",
    "qido.date-range",
    "wado.retrieve-instance",
    "wado.retrieve-study",
    "wado.metadata-instance",
    "wado.frames-single",
    "wado.frames-list",
)
#: Known Orthanc 1.10.1 gaps: they must show up as fail / not supported.
ORTHANC_KNOWN_GAPS = (
    "stow.partial-failure-202",
    "qido.percent-encoded-value",
    "qido.includefield-comma-encoded",
    "cors.simple-get",
    "cleanup.delete-study",
)


def _run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def orthanc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not orthanc_available():
        pytest.skip(f"{ORTHANC_BINARY} or the DICOMweb plugin is not installed")
    with run_orthanc(free_port(), tmp_path_factory.mktemp("orthanc-data")) as server:
        yield server.dicomweb_url


@pytest.fixture(scope="module")
def orthanc_results(
    orthanc_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """The suite against Orthanc; the published results in conformance/results/ are written by
    `python -m conformance.compare`, not by the tests."""
    version = requests.get(orthanc_url.rsplit("/", 1)[0] + "/system", timeout=10).json()
    label = f"Orthanc {version.get('Version', '?')} + DICOMweb plugin"
    results_dir = tmp_path_factory.mktemp("orthanc-results")
    orthanc_json = results_dir / "orthanc-conformance.json"
    proc = _run_cli(
        "--url", orthanc_url, "--label", label, "--json", str(orthanc_json),
        "--report", str(results_dir / "orthanc-conformance.md"), "--no-fail", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert SUMMARY_RE.search(proc.stdout), proc.stdout[-2000:]
    results = json.loads(orthanc_json.read_text())
    results["_paths"] = {"json": str(orthanc_json),
                         "md": str(results_dir / "orthanc-conformance.md")}
    return results


def _outcomes(results: dict[str, object]) -> dict[str, str]:
    return {r["id"]: r["outcome"] for r in results["results"]}  # type: ignore[index, union-attr]


def test_orthanc_run_completes_with_every_check(orthanc_results: dict[str, object]) -> None:
    outcomes = _outcomes(orthanc_results)
    assert set(outcomes) == {c.id for c in REGISTRY.checks}
    assert orthanc_results["summary_line"]
    report = Path(orthanc_results["_paths"]["md"])  # type: ignore[index]
    assert report.read_text().startswith("# DICOMweb conformance: Orthanc")


@pytest.mark.parametrize("check_id", ORTHANC_CORE_PASSES)
def test_orthanc_passes_core_checks(orthanc_results: dict[str, object], check_id: str) -> None:
    result = next(r for r in orthanc_results["results"] if r["id"] == check_id)  # type: ignore[union-attr, index]
    assert result["outcome"] == "pass", result


@pytest.mark.parametrize("check_id", ORTHANC_KNOWN_GAPS)
def test_orthanc_known_gaps_are_reported(orthanc_results: dict[str, object], check_id: str) -> None:
    assert _outcomes(orthanc_results)[check_id] in ("fail", "not supported")


def test_orthanc_deletion_reported(orthanc_results: dict[str, object]) -> None:
    assert orthanc_results["deletion_supported"] is False


def test_exit_code_reflects_failures(orthanc_url: str) -> None:
    failing = _run_cli("--url", orthanc_url, "--only", "qido.percent-encoded-value", "-q")
    assert failing.returncode == 1, failing.stdout
    assert "qido.percent-encoded-value" in failing.stdout
    passing = _run_cli("--url", orthanc_url, "--only", "qido.match-uid", "--no-cleanup", "-q")
    assert passing.returncode == 0, passing.stdout
    assert "cleanup.delete-study" in passing.stdout and "skipped" in passing.stdout


def test_compare_two_result_files(orthanc_results: dict[str, object], tmp_path: Path) -> None:
    orthanc_json = orthanc_results["_paths"]["json"]  # type: ignore[index]
    other = dict(orthanc_results, label="Other server")
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    out = tmp_path / "compare.md"
    proc = _run_cli("--compare", str(orthanc_json), str(other_path), "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "| Check | Reference | Orthanc" in text and "| Other server |" in text
    assert "`wado.retrieve-instance`" in text
    assert "0 check(s) with different outcomes" in text


# -- without Orthanc --------------------------------------------------------------------


class _HtmlErrorHandler(BaseHTTPRequestHandler):
    """A broken "server": every request gets an HTML 500 page."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<html><body><h1>Internal error</h1></body></html>"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_OPTIONS = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlErrorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicomweb"
    finally:
        server.shutdown()
        server.server_close()


def test_broken_server_gives_failures_not_a_crash(
    broken_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "broken.json"
    code = conformance_main(["--url", broken_server, "--json", str(out), "--timeout", "5", "-q"])
    assert code == 1
    results = json.loads(out.read_text())
    outcomes = _outcomes(results)
    assert outcomes["stow.store-200"] == "fail"
    assert "pass" not in {outcomes[c] for c in ORTHANC_CORE_PASSES}
    assert "error" not in outcomes.values(), [
        r for r in results["results"] if r["outcome"] == "error"
    ]
    assert SUMMARY_RE.search(capsys.readouterr().out)


def test_unreachable_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicomweb"
    assert conformance_main(["--url", url, "--timeout", "2"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_registry_ids_unique_and_cited() -> None:
    ids = [c.id for c in REGISTRY.checks]
    assert len(ids) == len(set(ids))
    modules = {c.module for c in REGISTRY.checks}
    assert {"stow", "qido", "wado", "rendered", "cors", "capabilities"} <= modules
    for item in REGISTRY.checks:
        assert item.reference.startswith(("PS3.18", "extension")), item
        assert item.func.__doc__ or item.title
    assert REGISTRY.checks[-1].id == "cleanup.delete-study"


def test_only_selects_by_glob_and_substring() -> None:
    qido = REGISTRY.select(["qido.*"])
    assert qido and all(c.id.startswith("qido.") for c in qido)
    assert [c.id for c in REGISTRY.select(["frames-list"])] == ["wado.frames-list"]


def test_multipart_round_trip_and_quoted_parameters() -> None:
    body, ctype = encode_multipart([b"first\r\n--not-a-boundary", b"second"])
    params = media_params(ctype)
    assert params["type"] == "application/dicom"
    parts = split_multipart(body, params["boundary"])
    assert [p.content for p in parts] == [b"first\r\n--not-a-boundary", b"second"]
    assert parts[0].content_type == "application/dicom"
    quoted = media_params('multipart/related; type="application/octet-stream"; boundary="a b"')
    assert quoted == {"type": "application/octet-stream", "boundary": "a b"}
