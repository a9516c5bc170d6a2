"""WADO-RS frame and instance conversions done by the pixel library, end to end."""

from __future__ import annotations

from io import BytesIO

import jpeg_ls
import numpy as np
import pytest
import requests
from factory import image, new_uid, parse_multipart, to_bytes
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

ELE = "1.2.840.10008.1.2.1"
NATIVE_FRAMES = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'


def instance_url(server, ds) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def post(server, ds) -> None:
    response = requests.post(f"{server.url}/studies", data=to_bytes(ds),
                             headers={"Content-Type": "application/dicom"}, timeout=30)
    assert response.status_code == 200, response.text


def smooth_frames(frames: int, rows: int = 64, columns: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    stack = [(x * 90 + y * 40 + 300 * f) % 4096 for f in range(frames)]
    return np.asarray(stack, dtype=np.uint16)


def native_instance(frames: int = 2) -> tuple:
    pixels = smooth_frames(frames)
    ds = image(rows=pixels.shape[1], columns=pixels.shape[2], frames=frames)
    ds.PixelData = pixels.tobytes()
    return ds, pixels


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless, JPEGLSLossless])
def test_compressed_frames_as_native_little_endian(server, syntax):
    ds, pixels = native_instance()
    ds.compress(syntax, generate_instance_uid=False)
    post(server, ds)
    response = requests.get(instance_url(server, ds) + "/frames/2,1",
                            headers={"Accept": NATIVE_FRAMES}, timeout=30)
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.headers["content-type"], response.content)
    assert len(parts) == 2
    expected = dcmread(BytesIO(to_bytes(ds))).pixel_array
    for (headers, body), frame in zip(parts, (expected[1], expected[0]), strict=True):
        assert headers["content-type"].startswith("application/octet-stream")
        assert f"transfer-syntax={ELE}" in headers["content-type"]
        assert np.array_equal(np.frombuffer(body, "<u2").reshape(frame.shape), frame)
    assert np.array_equal(expected, pixels)


def test_native_frames_as_jpeg_ls(server):
    ds, pixels = native_instance()
    post(server, ds)
    response = requests.get(instance_url(server, ds) + "/frames/1,2",
                            headers={"Accept": 'multipart/related; type="image/jls"'}, timeout=30)
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.headers["content-type"], response.content)
    for (headers, body), frame in zip(parts, pixels, strict=True):
        assert headers["content-type"].startswith("image/jls")
        assert f"transfer-syntax={JPEGLSLossless}" in headers["content-type"]
        assert body[:2] == b"\xff\xd8"  # SOI of a JPEG-LS bitstream
        assert np.array_equal(jpeg_ls.decode(np.frombuffer(body, np.uint8)), frame)


def test_native_frames_as_jpeg_2000_and_unproducible(server):
    ds, pixels = native_instance(frames=1)
    post(server, ds)
    url = instance_url(server, ds) + "/frames/1"
    response = requests.get(url, headers={"Accept": 'multipart/related; type="image/jp2"'},
                            timeout=30)
    assert response.status_code == 200, response.text
    body = parse_multipart(response.headers["content-type"], response.content)[0][1]
    from dicomweb.pixels.codecs import decode_frame
    from dicomweb.pixels.description import PixelDescription

    decoded = decode_frame(body, JPEG2000Lossless, PixelDescription.from_dataset(ds))
    assert np.array_equal(decoded, pixels[0])
    # JPEG baseline cannot be encoded here: 406, not a wrong body.
    baseline = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert requests.get(url, headers={"Accept": baseline}, timeout=30).status_code == 406


def test_j2k_instance_as_explicit_little_endian(server):
    ds, pixels = native_instance()
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    post(server, ds)
    response = requests.get(
        instance_url(server, ds),
        headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    headers, body = parse_multipart(response.headers["content-type"], response.content)[0]
    assert f"transfer-syntax={ELE}" in headers["content-type"]
    out = dcmread(BytesIO(body))
    assert out.file_meta.TransferSyntaxUID == ELE
    assert not out["PixelData"].is_undefined_length
    assert np.array_equal(out.pixel_array, pixels)
    original = dcmread(BytesIO(to_bytes(ds)))
    skip = {"PixelData"}
    assert {e.keyword for e in original if e.keyword not in skip} == {
        e.keyword for e in out if e.keyword not in skip}
    for element in original:
        if element.keyword not in skip:
            assert out[element.tag].value == element.value, element.keyword
    assert out.SOPInstanceUID == ds.SOPInstanceUID and new_uid() != ds.SOPInstanceUID
