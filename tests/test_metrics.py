"""GET /metrics on a real server with two uvicorn workers: one scrape adds up both workers
(prometheus-client's multiprocess mode), whichever of them answers it."""

from __future__ import annotations

import time

import requests
from conftest import start_server, stop_server
from factory import image, multipart, new_uid, to_bytes
from prometheus_client.parser import text_string_to_metric_families
from test_importer import create_api_key

from dicomweb.store.database import make_engine


def scrape(origin: str) -> dict[tuple[str, tuple], float]:
    response = requests.get(f"{origin}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_add_up_both_workers(tmp_path, backend):
    server = start_server(tmp_path / "data", backend, workers=2)
    try:
        study, series = new_uid(), new_uid()
        datasets = [image(study=study, series=series, instance_number=i, position_z=float(i))
                    for i in range(4)]
        body, content_type = multipart([to_bytes(ds) for ds in datasets] + [b"not DICOM"])
        stored = requests.post(f"{server.url}/studies", data=body,
                               headers={"Content-Type": content_type}, timeout=60)
        assert stored.status_code == 202  # four stored, one rejected
        body, content_type = multipart([to_bytes(datasets[0])])
        again = requests.post(f"{server.url}/studies", data=body,
                              headers={"Content-Type": content_type}, timeout=60)
        assert again.status_code == 200  # the same bytes again: a duplicate
        # Many connections, so both workers answer some of them.
        searches = 30
        for _ in range(searches):
            requests.get(f"{server.url}/studies?StudyInstanceUID={study}", timeout=30)
        mpr = f"{server.url}/studies/{study}/series/{series}/mpr/axial"
        for _ in range(6):
            assert requests.get(mpr, headers={"Accept": "application/octet-stream"},
                                timeout=60).status_code == 200

        # A request is counted once its response has gone (the middleware's `finally`): the
        # other worker may answer the scrape before the last MPR request is counted there.
        mpr_route = "/dicomweb/studies/{study}/series/{series}/mpr/{plane}"
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(server.origin)
            counted = value(samples, "dicomweb_requests_total", method="GET", route=mpr_route,
                            status="200")
            if counted >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        route = "/dicomweb/studies"
        assert value(samples, "dicomweb_requests_total", method="GET", route=route,
                     status="200") == searches
        assert value(samples, "dicomweb_requests_total", method="POST", route=route,
                     status="202") == 1
        assert value(samples, "dicomweb_request_duration_seconds_count", method="GET",
                     route=route) == searches
        assert value(samples, "dicomweb_request_duration_seconds_bucket", method="GET",
                     route=route, le="+Inf") == searches
        assert counted == 6  # by template: no UID in any label

        assert value(samples, "dicomweb_instances_stored_total", outcome="stored") == 4
        assert value(samples, "dicomweb_instances_stored_total", outcome="duplicate") == 1
        assert value(samples, "dicomweb_stored_bytes_total") == sum(
            len(to_bytes(ds)) for ds in datasets)
        rejected = {labels: v for (name, labels), v in samples.items()
                    if name == "dicomweb_rejected_parts_total"}
        assert sum(rejected.values()) == 1
        assert all(dict(labels)["reason"].startswith("0x") for labels in rejected)

        hits = value(samples, "dicomweb_volume_cache_lookups_total", result="hit")
        misses = value(samples, "dicomweb_volume_cache_lookups_total", result="miss")
        assert hits + misses == 6 and 1 <= misses <= 2  # one load per worker at most
        assert value(samples, "dicomweb_volume_cache_hit_ratio") == hits / 6
        assert value(samples, "dicomweb_volume_cache_bytes") >= 16 * 16 * 4 * 4  # float32 voxels

        # Both workers' pools are summed: twice one worker's capacity, connections in use within.
        engine = make_engine(backend or f"sqlite:///{tmp_path / 'probe.sqlite'}")
        one_worker = engine.pool.size() + engine.pool._max_overflow
        engine.dispose()
        capacity = value(samples, "dicomweb_db_pool_capacity")
        assert capacity == 2 * one_worker
        assert 0 <= value(samples, "dicomweb_db_connections_in_use") <= capacity
    finally:
        stop_server(server)


def test_metrics_is_an_admin_resource_once_authentication_is_on(tmp_path):
    data = tmp_path / "data"
    reader = create_api_key(data, "reader", "dicomweb:read")
    admin = create_api_key(data, "prometheus", "dicomweb:admin")
    server = start_server(data, None)
    try:
        def status(key: str | None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return requests.get(f"{server.origin}/metrics", headers=headers, timeout=30).status_code

        assert status(None) == 401
        assert status(reader) == 403
        assert status(admin) == 200
        assert requests.get(f"{server.origin}/healthz", timeout=30).status_code == 200
    finally:
        stop_server(server)
