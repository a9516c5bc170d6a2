"""A sweep of hostile requests against a real server: damaged codestreams and pixel formats no
codec takes, asked for in every transfer syntax and media type, plus malformed URLs, queries
and uploads. No answer is a 5xx, and no error body carries an exception class name, a
traceback, SQL, a server path or a library's own message: reasons are in words."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from conftest import Server
from factory import image, multipart, to_bytes
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

INTERNALS = re.compile(
    r"\b\w+(Error|Exception)\b|Traceback|\bSELECT\b|\bFROM\b|\bWHERE\b|sqlalchemy|psycopg|"
    r"/tmp/|/work/|/home/|/usr/|site-packages|\.py\b|<class|pydicom|numpy|pylibjpeg|openjpeg|"
    r"charls|pillow|\bPIL\b|dtype|errno|\[Errno"
)
TARGETS = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
           "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80",
           "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
           "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201"]
MEDIA_TYPES = ["image/jpeg", "image/png", "image/gif", "image/jp2", "image/jls",
               "image/dicom-rle", "image/jpx"]


def encapsulated(syntax: str, damage) -> object:
    ds = image(rows=32, columns=32)
    ds.compress(syntax, generate_instance_uid=False)
    frame = bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))
    ds.PixelData = encapsulate([damage(frame)])
    return ds


def jpeg_garbage() -> object:
    ds = image(rows=32, columns=32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc0" + b"\x01" * 100])
    ds["PixelData"].VR = "OB"
    return ds


def native(**attributes) -> object:
    ds = image(rows=15, columns=15)
    pixels = attributes.pop("pixels")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels
    return ds


def damaged_instances() -> dict[str, object]:
    def truncated(frame: bytes) -> bytes:
        return frame[: len(frame) // 3]

    def flipped(frame: bytes) -> bytes:
        return bytes(b ^ 0x5A if 40 < i < 200 else b for i, b in enumerate(frame))

    return {
        "j2k-truncated": encapsulated(JPEG2000Lossless, truncated),
        "j2k-flipped": encapsulated(JPEG2000Lossless, flipped),
        "jpeg-ls-garbage": encapsulated(JPEGLSLossless, lambda f: f[:20] + bytes(range(256))),
        "rle-truncated": encapsulated(RLELossless, truncated),
        "jpeg-garbage": jpeg_garbage(),
        "rgb-odd-length": native(SamplesPerPixel=3, PhotometricInterpretation="RGB",
                                 PlanarConfiguration=0, BitsAllocated=8, BitsStored=8,
                                 HighBit=7, pixels=b"\x10" * (15 * 15 * 3 + 1)),
        "32-bit": native(BitsAllocated=32, BitsStored=32, HighBit=31,
                         pixels=b"\x01" * (15 * 15 * 4 + 2)),
        "bits-stored-beyond-allocated": native(BitsStored=20, HighBit=19,
                                               pixels=b"\x01" * (15 * 15 * 2 + 2)),
        "palette-without-lut": native(PhotometricInterpretation="PALETTE COLOR",
                                      pixels=b"\x01" * (15 * 15 * 2 + 2)),
    }


def requests_for(url: str) -> Iterator[tuple[str, dict[str, str]]]:
    for target in TARGETS:
        yield url, {"Accept": f'multipart/related; type="application/dicom"; '
                              f"transfer-syntax={target}"}
        yield url + "/frames/1", {"Accept": f'multipart/related; '
                                            f'type="application/octet-stream"; '
                                            f"transfer-syntax={target}"}
    for media_type in MEDIA_TYPES:
        yield url + "/frames/1", {"Accept": f'multipart/related; type="{media_type}"'}
        yield url + "/rendered", {"Accept": media_type}
        yield url + "/frames/1/rendered", {"Accept": media_type}
    for path in ["/thumbnail", "/rendered?window=1,0,linear", "/rendered?viewport=0,0",
                 "/rendered?window=x", "/frames/2", "/frames/0", "/frames/1,a",
                 "/frames/99999999999999999999", "/bulkdata/7fe00010", "/bulkdata/zz",
                 "/bulkdata/00400275/1/00401001", "/metadata"]:
        yield url + path, {}
    yield url, {"Accept": "application/zip"}


def assert_clean(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert not INTERNALS.search(response.text), (what, response.text[:300])


@pytest.fixture(scope="module")
def damaged(server: Server) -> dict[str, str]:
    urls = {}
    for name, ds in damaged_instances().items():
        response = requests.post(f"{server.url}/studies", data=to_bytes(ds),
                                 headers={"Content-Type": "application/dicom"}, timeout=60)
        assert_clean(response, f"STOW {name}")
        if response.status_code == 200:
            urls[name] = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/"
                          f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    assert len(urls) >= 6, urls
    return urls


def test_pixel_requests_on_damaged_instances_give_clean_errors(damaged: dict[str, str]) -> None:
    errors = 0
    with requests.Session() as session:
        for name, url in damaged.items():
            for target, headers in requests_for(url):
                response = session.get(target, headers=headers, timeout=60)
                assert_clean(response, f"{name} {target[len(url):]} {headers}")
                errors += response.status_code >= 400
    assert errors > 100  # the sweep met the error paths it is about


def test_malformed_urls_queries_and_uploads_give_clean_errors(server: Server) -> None:
    base = server.url
    gets = ["/studies?limit=-1", "/studies?limit=99999999999999999999999",
            "/studies?offset=x", "/studies?StudyDate=2024-99-99", "/studies?00100010=%00",
            "/studies?includefield=nonsense", "/studies?PatientName=" + "*" * 5000,
            "/studies?StudyInstanceUID=" + ",".join(["1.2"] * 3000), "/studies?fuzzymatching=maybe",
            "/studies/1.2.3/series/%2e%2e/instances", "/studies/..%2f..%2fetc/metadata",
            "/studies/1.2%00/metadata", "/studies/1.2/series/3%00/instances/4/frames/1",
            "/studies/%00/labels", "/studies/" + "9" * 5000, "/series?Modality=%ff%fe",
            "/studies/1.2/series/3.4/instances/5.6/frames/1", "/studies/1.2/rendered?quality=500"]
    with requests.Session() as session:
        for path in gets:
            assert_clean(session.get(base + path, timeout=60), path)
        for content_type in ["multipart/related", 'multipart/related; boundary=""',
                             "multipart/related; type=application/dicom; boundary=x",
                             "application/dicom", "text/plain", "application/dicom+json"]:
            response = session.post(f"{base}/studies", data=b"--x\r\n\r\nnot dicom",
                                    headers={"Content-Type": content_type}, timeout=60)
            assert_clean(response, f"POST {content_type}")
        raw = to_bytes(image())
        body, content_type = multipart([raw[:300], raw[:-100], b"\0" * 1000,
                                        raw.replace(b"1.2.", b"..\x00", 1)])
        response = session.post(f"{base}/studies", data=body,
                                headers={"Content-Type": content_type}, timeout=60)
        assert_clean(response, "STOW of damaged parts")
        assert not INTERNALS.search(response.text), response.text[:500]
        for method in ["PUT", "PATCH", "DELETE"]:
            assert_clean(session.request(method, f"{base}/studies/1.2%00", timeout=60), method)
