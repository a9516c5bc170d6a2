"""Forwarded headers end to end: believed only from --forwarded-allow-ips, only well-formed
values, and the root substituted into stored JSON safely (BulkDataURI, RetrieveURL)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import REFERENCED, RETRIEVE_URL, image, multipart, stow_items, to_bytes


def bulk_uris(metadata: list[dict]) -> list[str]:
    return [v["BulkDataURI"] for item in metadata for v in item.values() if "BulkDataURI" in v]


@pytest.fixture(scope="module")
def stored(server: Server) -> object:
    ds = image(rows=64, columns=64)
    assert server.stow(ds).status_code == 200
    return ds


def metadata(server: Server, ds, headers: dict[str, str]) -> list[dict]:
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/metadata")
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 200
    return orjson.loads(response.content)  # formerly invalid JSON with a quote in the host


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Host": 'evil"host', "X-Forwarded-Proto": "javascript"},
    {"Forwarded": 'host="a\\"b";proto=data'},
    {"X-Forwarded-Host": "h</script>", "X-Forwarded-Prefix": '/x"y'},
    {"Host": 'bad"host'},
])
def test_malformed_forwarded_values_are_ignored(server: Server, stored, headers) -> None:
    uris = bulk_uris(metadata(server, stored, headers))
    assert uris and all(u.startswith("http://127.0.0.1:") for u in uris), uris


def test_trusted_proxy_headers_are_used(server: Server, stored) -> None:
    headers = {"X-Forwarded-Host": "pacs.example.org", "X-Forwarded-Proto": "https",
               "X-Forwarded-Prefix": "/imaging", "X-Forwarded-For": "198.51.100.7"}
    uris = bulk_uris(metadata(server, stored, headers))
    assert all(u.startswith("https://pacs.example.org/imaging/dicomweb/studies/") for u in uris)
    # the ASGI client the audit trail sees
    assert '"client":"198.51.100.7"' in server.log_once_it_holds('"client":"198.51.100.7"')


@pytest.fixture(scope="module")
def behind_other_proxy(
    backend: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("proxy"), backend,
                           extra=["--forwarded-allow-ips", "192.0.2.1"])
    yield running
    stop_server(running)


def test_forwarded_headers_of_untrusted_peers_are_ignored(behind_other_proxy: Server) -> None:
    body, content_type = multipart([to_bytes(image())])
    response = requests.post(
        f"{behind_other_proxy.url}/studies", data=body,
        headers={"Content-Type": content_type, "X-Forwarded-Host": "evil.example.org",
                 "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}, timeout=30)
    assert response.status_code == 200
    url = stow_items(response.json(), REFERENCED)[0][RETRIEVE_URL]["Value"][0]
    assert url.startswith(behind_other_proxy.url + "/studies/")
    log = behind_other_proxy.log_once_it_holds('"path":"/dicomweb/studies"')
    assert '"client":"203.0.113.5"' not in log and '"client":"127.0.0.1"' in log
