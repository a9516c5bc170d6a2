"""The conformance suite (`python -m conformance`) against our own server: no check fails."""

from __future__ import annotations

import json
import subprocess
import sys


def test_conformance_suite_passes_against_our_server(server, tmp_path):
    report = tmp_path / "ours.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "--url",
            server.url,
            "--label",
            "ours",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcomes = json.loads(report.read_text())
    failed = [c for c in outcomes["results"] if c["outcome"] in ("fail", "error")]
    assert result.returncode == 0, result.stdout[-3000:]
    assert failed == []
    assert sum(c["outcome"] == "pass" for c in outcomes["results"]) >= 70
