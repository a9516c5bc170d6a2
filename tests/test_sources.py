"""Never a 200 that is cut off or wrong (dicomweb.sources): files are opened and transcodes
produced before the status line, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import requests
from factory import image, new_uid, parse_multipart, to_bytes
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_encoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from test_pixels_hostile import INTERNALS

ELE = "1.2.840.10008.1.2.1"


def instances_accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


def post(server, data: bytes) -> None:
    response = requests.post(f"{server.url}/studies", data=data,
                             headers={"Content-Type": "application/dicom"}, timeout=60)
    assert response.status_code in (200, 202), response.text  # 202: stored, with warnings


def same_length_uid(uid: str) -> str:
    """A fresh UID of the same length (2.25 form, PS3.5 B.2)."""
    digits = "".join(random.choices("0123456789", k=max(len(uid) - 6, 1)))
    return ("2.25.1" + digits)[: len(uid)]


def with_new_uids(path: str | Path) -> tuple[bytes, Dataset]:
    """A test file with fresh Study, Series and SOP Instance UIDs (pydicom's files share
    them), replaced in its bytes: the file is otherwise exactly as pydicom ships it."""
    data = Path(path).read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        old = str(ds.get(keyword, ""))
        if len(old) >= 8:
            data = data.replace(old.encode(), same_length_uid(old).encode())
    return data, dcmread(BytesIO(data), stop_before_pixels=True)


def test_a_retrieve_racing_a_delete_is_whole(server):
    study, series = new_uid(), new_uid()
    sent = {}
    for number in range(1, 31):
        ds = image(study=study, series=series, instance_number=number, rows=512, columns=512)
        sent[ds.SOPInstanceUID] = to_bytes(ds)
    response = server.stow(*[dcmread(BytesIO(data)) for data in sent.values()])
    assert response.status_code == 200, response.text
    with requests.get(f"{server.url}/studies/{study}", stream=True, timeout=60,
                      headers={"Accept": 'multipart/related; type="application/dicom"'}
                      ) as retrieve:
        assert retrieve.status_code == 200
        first = retrieve.raw.read(1000)
        deleted = requests.delete(f"{server.url}/studies/{study}", timeout=60)
        assert deleted.status_code == 200, deleted.text
        body = first + retrieve.raw.read()
    parts = parse_multipart(retrieve.headers["content-type"], body)
    assert len(parts) == 30
    received = {dcmread(BytesIO(data)).SOPInstanceUID: data for _, data in parts}
    assert received == sent
    after = requests.get(f"{server.url}/studies/{study}", timeout=60)
    assert after.status_code == 404


@pytest.mark.parametrize(("name", "syntax"), [
    ("rtdose.dcm", JPEGLSLossless),           # 32-bit samples
    ("rtdose.dcm", JPEG2000Lossless),
    ("liver_1frame.dcm", JPEG2000Lossless),   # 1-bit samples
    ("liver_1frame.dcm", JPEGLSLossless),
    ("liver_1frame.dcm", RLELossless),
    ("SC_rgb_small_odd_big_endian.dcm", JPEGLSLossless),  # 3 x 3 big-endian RGB
])
def test_an_instance_that_cannot_be_transcoded_is_406_before_anything_is_sent(
        server, name, syntax):
    data, ds = with_new_uids(get_testdata_file(name))
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    post(server, to_bytes(image(study=study, series=series, instance_number=1)))
    post(server, data)
    response = requests.get(f"{server.url}/studies/{study}/series/{series}",
                            headers=instances_accept(syntax), timeout=60)
    assert response.status_code == 406, response.status_code
    assert "cannot" in response.json()["error"]["message"]
    for internal in INTERNALS:
        assert internal not in response.text, response.text
    whole = requests.get(f"{server.url}/studies/{study}/series/{series}",
                         headers=instances_accept(ELE), timeout=60)
    assert whole.status_code == 200
    assert len(parse_multipart(whole.headers["content-type"], whole.content)) == 2


def test_a_later_instance_that_fails_to_decode_is_406_not_a_cut_body(server):
    """Which data decodes is known only by decoding it: all of it is, before the status."""
    study, series = new_uid(), new_uid()
    good = image(study=study, series=series, instance_number=1, rows=64, columns=64)
    good.compress(JPEG2000Lossless, generate_instance_uid=False)
    bad = image(study=study, series=series, instance_number=2, rows=64, columns=64)
    bad.compress(JPEG2000Lossless, generate_instance_uid=False)
    codestream = bytearray(next(generate_frames(bad.PixelData, number_of_frames=1)))
    codestream[200:] = b"\x5a" * (len(codestream) - 200)  # header intact, data garbage
    bad.PixelData = encapsulate([bytes(codestream)])
    post(server, to_bytes(good))
    post(server, to_bytes(bad))
    response = requests.get(f"{server.url}/studies/{study}", headers=instances_accept(ELE),
                            timeout=60)
    assert response.status_code == 406, response.status_code
    assert "cannot be decoded" in response.json()["error"]["message"]
    for internal in INTERNALS:
        assert internal not in response.text, response.text


def icon_instance() -> tuple[Dataset, np.ndarray]:
    """A JPEG-LS instance whose Icon Image Sequence is JPEG-LS compressed too."""
    ds = image(rows=64, columns=64)
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    pixels = (np.arange(16 * 16, dtype=np.uint8).reshape(16, 16) * 3) % 251
    icon = Dataset()
    icon.Rows = icon.Columns = 16
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    codestream = get_encoder(JPEGLSLossless).encode(
        pixels, rows=16, columns=16, samples_per_pixel=1, bits_allocated=8, bits_stored=8,
        pixel_representation=0, photometric_interpretation="MONOCHROME2",
        number_of_frames=1)
    icon.PixelData = encapsulate([codestream])
    icon["PixelData"].VR = "OB"
    icon["PixelData"].is_undefined_length = True
    ds.IconImageSequence = [icon]
    return ds, pixels


def test_a_transcoded_instance_has_no_compressed_icon(server):
    ds, icon_pixels = icon_instance()
    post(server, to_bytes(ds))
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    response = requests.get(url, headers=instances_accept(ELE), timeout=60)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)  # the spool's
    (_, data), = parse_multipart(response.headers["content-type"], response.content)
    out = dcmread(BytesIO(data))
    assert str(out.file_meta.TransferSyntaxUID) == ELE
    icon = out.IconImageSequence[0]
    assert not icon["PixelData"].is_undefined_length
    assert np.array_equal(np.frombuffer(icon.PixelData, np.uint8).reshape(16, 16), icon_pixels)
    assert np.array_equal(out.pixel_array, dcmread(BytesIO(to_bytes(ds))).pixel_array)


def test_rgb_as_reversible_jpeg_2000_is_ybr_rct(server):
    data, ds = with_new_uids(get_testdata_file("SC_rgb.dcm"))
    post(server, data)
    response = requests.get(f"{server.url}/studies/{ds.StudyInstanceUID}",
                            headers=instances_accept(JPEG2000Lossless), timeout=60)
    assert response.status_code == 200
    (_, body), = parse_multipart(response.headers["content-type"], response.content)
    out = dcmread(BytesIO(body))
    # PS3.5 8.2.4: the reversible colour transform of JPEG 2000 makes the data YBR_RCT.
    assert out.PhotometricInterpretation == "YBR_RCT"
    assert np.array_equal(out.pixel_array, dcmread(BytesIO(data)).pixel_array)
