"""ETag / If-None-Match → 304 and Cache-Control (dicomweb/http_cache.py), end to end: the
validator changes when the content changes (STOW into the series, DELETE, a new version of an
instance), and the hot frame locations never serve a deleted or replaced instance's bytes."""

from __future__ import annotations

import requests
from factory import image, new_uid, parse_multipart

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def get(url: str, accept: str, **headers: str) -> requests.Response:
    return requests.get(url, headers={"Accept": accept, **headers}, timeout=30)


def revalidated(url: str, accept: str) -> tuple[str, int]:
    first = get(url, accept)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "private, no-cache"
    etag = first.headers["etag"]
    again = get(url, accept, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    return etag, get(url, accept, **{"If-None-Match": 'W/"other"'}).status_code


def test_metadata_304_and_new_etag_after_stow_and_delete(server, stored_study):
    url = f"{server.url}/studies/{stored_study['study']}/series/{stored_study['ct']}/metadata"
    etag, status = revalidated(url, "application/dicom+json")
    assert status == 200
    added = image(study=stored_study["study"], series=stored_study["ct"], instance_number=9,
                  patient_id=stored_study["patient_id"])
    stowed = server.stow(added)
    assert stowed.status_code == 200 and stowed.headers["cache-control"] == "no-store"
    after_stow = get(url, "application/dicom+json", **{"If-None-Match": etag})
    assert after_stow.status_code == 200 and len(after_stow.json()) == 4
    new_etag = after_stow.headers["etag"]
    assert new_etag != etag
    instance = f"{server.url}/studies/{added.StudyInstanceUID}/series/{added.SeriesInstanceUID}"
    deleted = requests.delete(f"{instance}/instances/{added.SOPInstanceUID}", timeout=30)
    assert deleted.status_code == 200 and deleted.headers["cache-control"] == "no-store"
    after_delete = get(url, "application/dicom+json", **{"If-None-Match": new_etag})
    assert after_delete.status_code == 200 and len(after_delete.json()) == 3
    assert after_delete.headers["etag"] == etag  # the same three instances as at first


def test_rendered_thumbnail_bulkdata_frames_304(server, stored_study):
    ds = stored_study["datasets"][0]
    instance = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
    for url, accept in [
        (f"{instance}/rendered", "image/jpeg"),
        (f"{instance}/thumbnail", "image/jpeg"),
        (f"{instance}/frames/1", FRAME_ACCEPT),
        (f"{instance}/bulkdata/7FE00010", "application/octet-stream"),
    ]:
        etag, status = revalidated(url, accept)
        assert status == 200, url
        if "frames" in url or "bulkdata" in url:
            other = "application/octet-stream" if accept != "application/octet-stream" else (
                'multipart/related; type="application/octet-stream"')
            other_body = get(url, other)  # single part against multipart: another body
            assert other_body.status_code == 200 and other_body.headers["etag"] != etag
        else:
            png = get(url, "image/png")
            assert png.status_code == 200 and png.headers["etag"] != etag


def test_no_stale_frame_after_delete_and_new_version(server):
    study, series, sop = new_uid(), new_uid(), new_uid()
    first = image(study=study, series=series, sop=sop, instance_number=1)
    assert server.stow(first).status_code == 200
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}/frames/1"
    for _ in range(3):  # the location is now hot in memory
        response = get(url, FRAME_ACCEPT)
    old_etag = response.headers["etag"]
    old_frame = parse_multipart(response.headers["content-type"], response.content)[0][1]
    assert old_frame == bytes(first.PixelData)
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code == 200
    assert get(url, FRAME_ACCEPT).status_code == 404
    assert get(url, FRAME_ACCEPT, **{"If-None-Match": old_etag}).status_code == 404
    second = image(study=study, series=series, sop=sop, instance_number=2)  # other pixels
    assert bytes(second.PixelData) != old_frame
    assert server.stow(second).status_code == 200
    response = get(url, FRAME_ACCEPT, **{"If-None-Match": old_etag})
    assert response.status_code == 200 and response.headers["etag"] != old_etag
    frame = parse_multipart(response.headers["content-type"], response.content)[0][1]
    assert frame == bytes(second.PixelData)


def test_overwrite_changes_every_validator(tmp_path, backend):
    """DICOMWEB_DUPLICATES=overwrite: the new version's metadata, frame and rendered image
    come with new ETags, and the hot frame location does not serve the old bytes."""
    from conftest import start_server, stop_server

    server = start_server(tmp_path / "data", backend,
                          env={"DICOMWEB_DUPLICATES": "overwrite"})
    try:
        study, series, sop = new_uid(), new_uid(), new_uid()
        first = image(study=study, series=series, sop=sop, instance_number=1)
        assert server.stow(first).status_code == 200
        instance = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
        metadata = f"{server.url}/studies/{study}/series/{series}/metadata"
        urls = [(metadata, "application/dicom+json"), (f"{instance}/frames/1", FRAME_ACCEPT),
                (f"{instance}/rendered", "image/jpeg")]
        before = {}
        for url, accept in urls:
            for _ in range(2):  # the second frame request is served from the hot location
                response = get(url, accept)
            before[url] = response.headers["etag"]
        second = image(study=study, series=series, sop=sop, instance_number=2)
        replaced = server.stow(second)
        assert replaced.status_code == 200 and replaced.headers["cache-control"] == "no-store"
        for url, accept in urls:
            response = get(url, accept, **{"If-None-Match": before[url]})
            assert response.status_code == 200, url
            assert response.headers["etag"] != before[url]
        frame = get(f"{instance}/frames/1", FRAME_ACCEPT)
        assert parse_multipart(frame.headers["content-type"], frame.content)[0][1] == bytes(
            second.PixelData)
    finally:
        stop_server(server)


def test_no_stale_rendered_image_after_delete_and_new_version(server):
    """A repeated rendered URL is answered from memory (HotTargets): never once the instance
    is deleted, and the new version's image once it is stored again."""
    study, series, sop = new_uid(), new_uid(), new_uid()
    assert server.stow(image(study=study, series=series, sop=sop, instance_number=1)
                       ).status_code == 200
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}/rendered"
    for _ in range(3):
        response = get(url, "image/jpeg")
    old_etag, old_body = response.headers["etag"], response.content
    assert get(url, "image/jpeg", **{"If-None-Match": old_etag}).status_code == 304
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code == 200
    assert get(url, "image/jpeg").status_code == 404
    assert get(url, "image/jpeg", **{"If-None-Match": old_etag}).status_code == 404
    assert server.stow(image(study=study, series=series, sop=sop, instance_number=2)
                       ).status_code == 200
    response = get(url, "image/jpeg", **{"If-None-Match": old_etag})
    assert response.status_code == 200 and response.headers["etag"] != old_etag
    assert response.content != old_body


def test_no_stale_location_for_another_image_of_a_deleted_instance(server):
    """Another window of an instance rendered before skips the index query (Located): once
    the instance is deleted it is 404, and once stored again it is the new version."""
    study, series, sop = new_uid(), new_uid(), new_uid()
    assert server.stow(image(study=study, series=series, sop=sop, instance_number=1)
                       ).status_code == 200
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}/rendered"
    first = get(f"{url}?window=100,200", "image/jpeg")
    second = get(f"{url}?window=100,300", "image/jpeg")  # from the kept location
    assert first.status_code == second.status_code == 200
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code == 200
    assert get(f"{url}?window=100,400", "image/jpeg").status_code == 404
    assert server.stow(image(study=study, series=series, sop=sop, instance_number=2)
                       ).status_code == 200
    again = get(f"{url}?window=100,300", "image/jpeg")
    assert again.status_code == 200 and again.headers["etag"] != second.headers["etag"]
