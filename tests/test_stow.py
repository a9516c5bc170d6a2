"""STOW-RS end to end (PS3.18 10.5): statuses, failure reasons, duplicates, atomicity."""

from __future__ import annotations

import requests
from factory import (
    FAILED,
    FAILURE_REASON,
    REFERENCED,
    RETRIEVE_URL,
    SOP_UID,
    image,
    multipart,
    new_uid,
    stow_items,
    to_bytes,
)

RETRIEVE_AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def reasons(body: dict) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in stow_items(body, FAILED)]


def retrieve_bytes(server, ds) -> bytes:
    from factory import parse_multipart

    url = (
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    response = requests.get(url, headers=RETRIEVE_AS_STORED, timeout=30)
    assert response.status_code == 200, response.text
    return parse_multipart(response.headers["content-type"], response.content)[0][1]


def test_all_stored_gives_200_with_retrieve_urls(server):
    datasets = [image(), image()]
    response = server.stow(*datasets)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    referenced = stow_items(response.json(), REFERENCED)
    assert {i[SOP_UID]["Value"][0] for i in referenced} == {d.SOPInstanceUID for d in datasets}
    for item in referenced:
        url = item[RETRIEVE_URL]["Value"][0]
        assert url.startswith(server.url + "/studies/")
        assert requests.get(url, headers=RETRIEVE_AS_STORED, timeout=30).status_code == 200


def test_single_part_application_dicom_body(server):
    ds = image()
    response = requests.post(
        f"{server.url}/studies",
        data=to_bytes(ds),
        headers={"Content-Type": "application/dicom"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert retrieve_bytes(server, ds) == to_bytes(ds)


def test_some_failed_gives_202_with_reasons(server):
    good = image()
    body, content_type = multipart([to_bytes(good), b"this is not DICOM at all" * 10])
    response = requests.post(
        f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == 202
    assert reasons(response.json()) == [0xC000]
    assert retrieve_bytes(server, good) == to_bytes(good)


def test_none_stored_gives_409(server):
    missing_uid = image()
    del missing_uid.SeriesInstanceUID
    body, content_type = multipart([b"\x00" * 300, to_bytes(missing_uid)])
    response = requests.post(
        f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == 409
    assert sorted(reasons(response.json())) == [0xA900, 0xC000]
    comments = [i["00000902"]["Value"][0] for i in stow_items(response.json(), FAILED)]
    assert any("SeriesInstanceUID" in c for c in comments)


def test_study_uid_must_match_target(server):
    target, other = new_uid(), image()
    response = server.stow(other, study=target)
    assert response.status_code == 409
    assert reasons(response.json()) == [0xA900]
    assert (
        requests.get(
            f"{server.url}/studies/{other.StudyInstanceUID}/metadata", timeout=30
        ).status_code
        == 404
    )


def test_truncated_file_is_rejected(server):
    ds = image(rows=64, columns=64)
    data = to_bytes(ds)
    response = requests.post(
        f"{server.url}/studies",
        data=data[: len(data) - 100],
        headers={"Content-Type": "application/dicom"},
        timeout=30,
    )
    assert response.status_code == 409
    assert reasons(response.json()) == [0xC000]
    assert "truncated" in response.text


def test_unsupported_media_types_give_415(server):
    for content_type in (
        "application/json",
        "text/plain",
        'multipart/related; type="application/dicom+xml"; boundary=x',
    ):
        response = requests.post(
            f"{server.url}/studies", data=b"{}", headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 415, content_type
        assert "not supported" in response.json()["error"]["message"]


def test_malformed_multipart_gives_400(server):
    ds_bytes = to_bytes(image())
    cut = b"--abc\r\nContent-Type: application/dicom\r\n\r\n" + ds_bytes  # no closing boundary
    for body, content_type in [
        (cut, 'multipart/related; type="application/dicom"; boundary=abc'),
        (ds_bytes, 'multipart/related; type="application/dicom"'),  # no boundary
        (b"--abc--\r\n", 'multipart/related; type="application/dicom"; boundary=abc'),
    ]:
        response = requests.post(
            f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 400, (content_type, response.text)


def test_duplicates_identical_accepted_different_rejected_original_kept(server):
    ds = image()
    original = to_bytes(ds)
    assert server.stow(ds).status_code == 200
    assert server.stow(ds).status_code == 200  # same bytes: idempotent
    ds.PatientName = "Changed^Name"
    response = server.stow(ds)
    assert response.status_code == 409
    assert reasons(response.json()) == [0x0111]
    assert retrieve_bytes(server, ds) == original


def test_transfer_syntaxes_are_stored_unchanged(server):
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    names = [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
        "image_dfl.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ]
    for name in names:
        path = get_testdata_file(name)
        ds = dcmread(path)
        ds.SOPInstanceUID = new_uid()  # pydicom's files share UIDs; stored bytes are ours
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        from io import BytesIO

        buffer = BytesIO()
        ds.save_as(buffer)
        data = buffer.getvalue()
        response = requests.post(
            f"{server.url}/studies",
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=30,
        )
        assert response.status_code == 200, (name, response.text)
        assert retrieve_bytes(server, ds) == data, name


def test_errors_leave_stored_data_intact(server, stored_study):
    before = requests.get(f"{server.url}/studies/{stored_study['study']}/metadata", timeout=30)
    bad = image(
        study=stored_study["study"],
        sop=stored_study["datasets"][0].SOPInstanceUID,
        patient_name="Other^Content",
    )
    body, content_type = multipart([to_bytes(bad), b"garbage"])
    requests.post(
        f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    requests.post(
        f"{server.url}/studies",
        data=b"--x\r\n",
        headers={"Content-Type": "multipart/related; boundary=x"},
        timeout=30,
    )
    after = requests.get(f"{server.url}/studies/{stored_study['study']}/metadata", timeout=30)
    assert after.status_code == 200
    assert after.content == before.content
    for ds in stored_study["datasets"]:
        assert retrieve_bytes(server, ds) == to_bytes(ds)


def test_large_upload_is_streamed_not_held_in_memory(server, tmp_path):
    """A 300 MiB instance goes through without the server's memory growing by its size."""
    ds = image(rows=512, columns=512, frames=600)
    data = to_bytes(ds)
    del ds
    body, content_type = multipart([data])
    del data

    def peak_rss_mib() -> float:
        with open(f"/proc/{server.process.pid}/status") as status:
            line = next(x for x in status if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    before = peak_rss_mib()
    chunks = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))
    response = requests.post(
        f"{server.url}/studies", data=chunks, headers={"Content-Type": content_type}, timeout=300
    )
    assert response.status_code == 200, response.text
    assert peak_rss_mib() - before < 100


def test_small_and_large_parts_mixed_past_a_spooled_batch_are_all_stored(server):
    """Parts up to SPOOL_PART_BYTES are held in memory and written in a thread per batch; a
    batch is handed over early once SPOOL_BATCH_BYTES of them are held. Parts on either side
    of those limits, in one request, are all stored byte for byte."""
    from dicomweb.stow import SPOOL_BATCH_BYTES, SPOOL_PART_BYTES

    study = new_uid()
    datasets = [image(study=study, rows=200, columns=250) for _ in range(24)]  # ~100 kB each
    datasets.insert(5, image(study=study, rows=400, columns=400))  # ~320 kB: to its file
    sizes = [len(to_bytes(ds)) for ds in datasets]
    assert sum(s for s in sizes if s <= SPOOL_PART_BYTES) > SPOOL_BATCH_BYTES / 2
    assert any(s > SPOOL_PART_BYTES for s in sizes)
    response = server.stow(*(datasets + [image(study=study, rows=200, columns=250)
                                         for _ in range(24)]))
    assert response.status_code == 200, response.text
    assert len(stow_items(response.json(), REFERENCED)) == 49
    for ds in datasets[3:7]:
        assert retrieve_bytes(server, ds) == to_bytes(ds)
