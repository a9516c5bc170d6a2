"""Retrieve Capabilities (PS3.18 8.9): OPTIONS on the service root."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import requests
from conftest import start_server, stop_server

WADL_NS = "{http://wadl.dev.java.net/2009/02}"


def test_options_on_root_describes_the_service_as_wadl(server):
    for url in (server.url, server.url + "/"):
        response = requests.options(url, timeout=30, allow_redirects=False)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
    root = ElementTree.fromstring(response.content)
    resources = root.find(f"{WADL_NS}resources")
    assert resources.get("base") == server.url + "/"
    methods = {
        (r.get("path"), m.get("name")): m.get("id")
        for r in resources.iter(f"{WADL_NS}resource")
        for m in r.iter(f"{WADL_NS}method")
    }
    assert methods[("studies", "POST")] == "store_instances"
    assert methods[("studies", "GET")] == "search_for_study"
    frames = "studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
    assert methods[(frames, "GET")] == "retrieve_frames"


def test_options_on_root_as_json(server):
    response = requests.options(server.url, headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code == 200
    paths = {r["path"] for r in response.json()["resources"]}
    assert {"studies", "series", "instances", "studies/{study}/metadata"} <= paths


def test_options_on_root_with_the_viewer_at_the_server_root(tmp_path):
    """The viewer's catch-all (GET /{path}) must not turn `OPTIONS /dicomweb` into a 405."""
    build = tmp_path / "ohif"
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><div id=root></div>")
    server = start_server(tmp_path / "data", None, extra=["--viewer", "--viewer-dir", str(build)])
    try:
        for url in (server.url, server.url + "/"):
            response = requests.options(url, timeout=30, allow_redirects=False)
            assert response.status_code == 200, url
            assert response.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
        assert requests.get(server.origin + "/", timeout=30).text.startswith("<!doctype html>")
    finally:
        stop_server(server)
