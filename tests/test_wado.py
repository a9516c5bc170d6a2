"""WADO-RS end to end (PS3.18 10.4): instances, metadata, bulk data, frames, negotiation."""

from __future__ import annotations

import numpy as np
import requests
from factory import new_uid, parse_multipart, to_bytes

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ELE = "1.2.840.10008.1.2.1"


def instance_url(server, ds) -> str:
    return (
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get(url: str, accept: str | None = None, **headers: str) -> requests.Response:
    if accept is not None:
        headers["Accept"] = accept
    return requests.get(url, headers=headers, timeout=30)


def test_retrieve_study_series_instance_byte_identical(server, stored_study):
    datasets = stored_study["datasets"]
    expected = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
    study_url = f"{server.url}/studies/{stored_study['study']}"
    for url, count in [
        (study_url, 5),
        (f"{study_url}/series/{stored_study['mr']}", 2),
        (instance_url(server, datasets[0]), 1),
    ]:
        response = get(url, AS_STORED)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/related")
        parts = parse_multipart(response.headers["content-type"], response.content)
        assert len(parts) == count
        for headers, body in parts:
            assert f"transfer-syntax={ELE}" in headers["content-type"]
            sop = headers["content-location"].rsplit("/", 1)[-1]
            assert body == expected[sop]


def test_retrieve_announces_its_exact_length(server, stored_study):
    """Every body is open before the status line, so its length is known: a client can tell
    a whole answer from a cut one (no chunked encoding)."""
    ds = stored_study["datasets"][0]
    for url, accept in [
        (f"{server.url}/studies/{stored_study['study']}", AS_STORED),
        (instance_url(server, ds), "application/dicom"),
    ]:
        response = get(url, accept)
        assert response.status_code == 200
        assert "transfer-encoding" not in response.headers
        assert int(response.headers["content-length"]) == len(response.content) > 0


def test_default_transfer_syntax_and_single_part(server, stored_study):
    ds = stored_study["datasets"][0]
    response = get(instance_url(server, ds), 'multipart/related; type="application/dicom"')
    assert response.status_code == 200
    assert parse_multipart(response.headers["content-type"], response.content)[0][1] == to_bytes(ds)
    single = get(instance_url(server, ds), "application/dicom")
    assert single.headers["content-type"].startswith("application/dicom")
    assert single.content == to_bytes(ds)
    many = get(f"{server.url}/studies/{stored_study['study']}", "application/dicom")
    assert many.status_code == 406


def test_metadata_levels_and_bulkdata(server, stored_study):
    study = stored_study["study"]
    study_metadata = get(f"{server.url}/studies/{study}/metadata", "application/dicom+json").json()
    assert len(study_metadata) == 5
    series_metadata = get(
        f"{server.url}/studies/{study}/series/{stored_study['ct']}/metadata"
    ).json()
    assert [m["00200013"]["Value"][0] for m in series_metadata] == [1, 2, 3]
    ds = stored_study["datasets"][0]
    metadata = get(instance_url(server, ds) + "/metadata").json()[0]
    for tag in (
        "00280010",
        "00280011",
        "00280030",
        "00281052",
        "00281050",
        "00200032",
        "00200037",
        "00200052",
    ):
        assert tag in metadata, tag
    pixel = metadata["7FE00010"]
    assert pixel["vr"] == "OW"
    uri = pixel["BulkDataURI"]
    assert uri.startswith(server.url + "/studies/")
    single = get(uri, "application/octet-stream")
    assert single.status_code == 200
    assert single.content == ds.PixelData
    multi = get(uri, 'multipart/related; type="application/octet-stream"')
    assert parse_multipart(multi.headers["content-type"], multi.content)[0][1] == ds.PixelData


def test_metadata_is_json_even_when_frame_types_are_listed_first(server, stored_study):
    accept = 'multipart/related; type="application/octet-stream", application/dicom+json'
    response = get(f"{server.url}/studies/{stored_study['study']}/metadata", accept)
    assert response.status_code == 200
    assert (
        get(f"{server.url}/studies/{stored_study['study']}/metadata", "image/png").status_code
        == 406
    )


def test_frames_native_with_ohif_accept_headers(server, stored_study):
    ds = stored_study["datasets"][3]  # MR, 2 frames
    frames = np.frombuffer(ds.PixelData, dtype="<u2").reshape(2, -1)
    url = instance_url(server, ds) + "/frames/2"
    for accept in (
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
        'multipart/related; type="application/octet-stream"; transfer-syntax=*; q=0.9, '
        'multipart/related; type="application/pdf"',
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1;'
        " transfer-syntax=*",
        None,
    ):
        response = get(url, accept)
        assert response.status_code == 200, (accept, response.text)
        parts = parse_multipart(response.headers["content-type"], response.content)
        assert len(parts) == 1
        headers, body = parts[0]
        assert f"transfer-syntax={ELE}" in headers["content-type"]
        assert body == frames[1].tobytes()
    both = get(
        instance_url(server, ds) + "/frames/1,2", "multipart/related; type=application/octet-stream"
    )
    bodies = [b for _, b in parse_multipart(both.headers["content-type"], both.content)]
    assert bodies == [frames[0].tobytes(), frames[1].tobytes()]


def test_frames_accept_query_parameter(server, stored_study):
    ds = stored_study["datasets"][0]
    url = (
        instance_url(server, ds)
        + "/frames/1?accept="
        + requests.utils.quote("multipart/related; type=application/octet-stream")
    )
    response = get(url, "image/png")
    assert response.status_code == 200


def test_frames_compressed_served_as_stored(server):
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    ds = dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer)
    assert (
        requests.post(
            f"{server.url}/studies",
            data=buffer.getvalue(),
            headers={"Content-Type": "application/dicom"},
            timeout=30,
        ).status_code
        == 200
    )
    expected = list(generate_frames(ds.PixelData, number_of_frames=2))
    url = instance_url(server, ds) + "/frames/1,2"
    for accept in (
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related; type="image/dicom-rle"',
        'multipart/related; type="image/x-dicom-rle"; transfer-syntax=1.2.840.10008.1.2.5',
    ):
        response = get(url, accept)
        assert response.status_code == 200, (accept, response.text)
        parts = parse_multipart(response.headers["content-type"], response.content)
        assert [b for _, b in parts] == expected
        assert all("transfer-syntax=1.2.840.10008.1.2.5" in h["content-type"] for h, _ in parts)
    assert get(url, 'multipart/related; type="video/mp4"').status_code == 406


def test_unacceptable_and_unknown(server, stored_study):
    ds = stored_study["datasets"][0]
    assert get(instance_url(server, ds), "text/html").status_code == 406
    assert get(instance_url(server, ds) + "/frames/1", "text/plain").status_code == 406
    assert get(f"{server.url}/studies/{new_uid()}", AS_STORED).status_code == 404
    assert get(f"{server.url}/studies/{new_uid()}/metadata").status_code == 404
    assert get(instance_url(server, ds) + "/frames/9").status_code == 404
    bad = get(instance_url(server, ds) + "/frames/x")
    assert bad.status_code == 400 and "frame" in bad.json()["error"]["message"]


def test_urls_behind_reverse_proxy(server, stored_study):
    ds = stored_study["datasets"][0]
    cases = [
        (
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "pacs.example.org",
                "X-Forwarded-Prefix": "/imaging",
            },
            "https://pacs.example.org/imaging/dicomweb",
        ),
        (
            {"Forwarded": 'for=10.0.0.1;proto=https;host="viewer.example.org"'},
            "https://viewer.example.org/dicomweb",
        ),
    ]
    for headers, root in cases:
        metadata = get(instance_url(server, ds) + "/metadata", **headers).json()[0]
        assert metadata["7FE00010"]["BulkDataURI"].startswith(root + "/studies/")
        study = get(
            f"{server.url}/studies?StudyInstanceUID={ds.StudyInstanceUID}", **headers
        ).json()[0]
        assert study["00081190"]["Value"][0] == f"{root}/studies/{ds.StudyInstanceUID}"


def test_delete_instance_series_study(server, stored_study):
    study, ct = stored_study["study"], stored_study["ct"]
    first = stored_study["datasets"][0]
    assert requests.delete(instance_url(server, first), timeout=30).status_code == 200
    assert get(instance_url(server, first), AS_STORED).status_code == 404
    counts = get(f"{server.url}/studies?StudyInstanceUID={study}").json()[0]
    assert counts["00201208"]["Value"] == [4]
    assert (
        requests.delete(f"{server.url}/studies/{study}/series/{ct}", timeout=30).status_code == 200
    )
    series = get(f"{server.url}/studies/{study}/series").json()
    assert [s["0020000E"]["Value"][0] for s in series] == [stored_study["mr"]]
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code == 200
    assert get(f"{server.url}/studies?StudyInstanceUID={study}").status_code == 204
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code == 404
    blobs = server.data_dir / "blobs" / study
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
    # Stored again after deletion: a fresh start, not a duplicate.
    assert server.stow(first).status_code == 200


def test_cors_and_resource_policy(server, stored_study):
    response = get(
        f"{server.url}/studies?StudyInstanceUID={stored_study['study']}",
        Origin="http://viewer.example",
    )
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    preflight = requests.options(
        f"{server.url}/studies/{stored_study['study']}/metadata",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,accept",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert "GET" in preflight.headers["access-control-allow-methods"]
