"""Several stateless servers over one index and one blob folder: store through one, read and
delete through the other; concurrent uploads of one study through both."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests
from conftest import start_server, stop_server
from factory import image, multipart, new_uid, parse_multipart, to_bytes

AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def post(url: str, datasets) -> requests.Response:
    body, content_type = multipart([to_bytes(ds) for ds in datasets])
    return requests.post(
        f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=120
    )


def test_two_servers_share_postgresql_and_blobs(postgres_database, tmp_path):
    blobs = tmp_path / "shared-blobs"
    extra = ["--blob-dir", str(blobs)]
    first = start_server(tmp_path / "a", postgres_database, extra=extra)
    second = start_server(tmp_path / "b", postgres_database, extra=extra, workers=2)
    try:
        study, series = new_uid(), new_uid()
        datasets = [image(study=study, series=series, instance_number=i) for i in range(40)]
        halves = [datasets[0::2], datasets[1::2]]
        # The same new study, patient and series arrive through both servers at once.
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(post, [first.url, second.url], halves))
        assert [r.status_code for r in responses] == [200, 200]

        for server in (first, second):
            found = requests.get(f"{server.url}/studies?StudyInstanceUID={study}", timeout=30)
            assert found.json()[0]["00201208"]["Value"] == [40]
            assert len(requests.get(f"{server.url}/studies/{study}/series", timeout=30).json()) == 1
        stored_by_first = halves[0][0]
        response = requests.get(
            f"{second.url}/studies/{study}/series/{series}/instances/"
            f"{stored_by_first.SOPInstanceUID}",
            headers=AS_STORED,
            timeout=30,
        )
        assert parse_multipart(response.headers["content-type"], response.content)[0][1] == (
            to_bytes(stored_by_first)
        )

        assert requests.delete(f"{second.url}/studies/{study}", timeout=30).status_code == 200
        assert (
            requests.get(f"{first.url}/studies?StudyInstanceUID={study}", timeout=30).status_code
            == 204
        )
        assert not any(p.is_file() for p in blobs.rglob("*.dcm"))
    finally:
        stop_server(first)
        stop_server(second)


def test_sqlite_with_two_workers(tmp_path):
    server = start_server(tmp_path / "data", None, workers=2)
    try:
        study = new_uid()
        series = [new_uid() for _ in range(6)]
        batches = [
            [image(study=study, series=series[i], instance_number=j) for j in range(10)]
            for i in range(6)
        ]
        with ThreadPoolExecutor(3) as pool:
            codes = [r.status_code for r in pool.map(lambda b: post(server.url, b), batches)]
        assert codes == [200] * 6
        found = requests.get(f"{server.url}/studies?StudyInstanceUID={study}", timeout=30)
        assert found.json()[0]["00201208"]["Value"] == [60]
        assert found.json()[0]["00201206"]["Value"] == [6]
    finally:
        stop_server(server)
