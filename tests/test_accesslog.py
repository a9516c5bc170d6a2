"""Structured access logs: one JSON object per request, from every worker."""

from __future__ import annotations

import json
import time

import requests
from conftest import start_server, stop_server


def access_records(log_text: str) -> list[dict]:
    records = []
    for line in log_text.splitlines():
        if "dicomweb.access" in line and "{" in line:
            records.append(json.loads(line[line.index("{") :]))
    return records


def test_each_request_is_logged_as_json(tmp_path):
    server = start_server(tmp_path / "data", None, workers=2)
    try:
        for _ in range(6):
            requests.get(f"{server.url}/studies?PatientID=nobody", timeout=30)
        requests.get(f"{server.url}/studies?limit=-1", timeout=30)
        time.sleep(0.5)
        records = access_records(server.log())
    finally:
        stop_server(server)
    searches = [r for r in records if r["path"] == "/dicomweb/studies"]
    assert len(searches) == 7
    assert {r["status"] for r in searches} == {204, 400}
    assert all(r["duration_ms"] >= 0 and r["client"] == "127.0.0.1" for r in searches)
    bad = next(r for r in searches if r["status"] == 400)
    assert bad["query"] == "limit=-1" and bad["bytes"] > 0
