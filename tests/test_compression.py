"""Content-Encoding of JSON answers (dicomweb/compression.py): every coding decodes to the
same JSON as the plain answer; the choice follows Accept-Encoding's q-values."""

from __future__ import annotations

import gzip

import brotli
import orjson
import pytest
import requests
import zstandard
from factory import image

from dicomweb.compression import choose_encoding

DECODE = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda body: zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 28),
}


def raw_get(url: str, encoding: str, accept: str = "application/dicom+json"):
    response = requests.get(url, headers={"Accept": accept, "Accept-Encoding": encoding},
                            timeout=30, stream=True)
    body = response.raw.read(decode_content=False)
    return response, body


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("identity", None), ("gzip", "gzip"), ("gzip;q=0", None),
    ("gzip, deflate, br, zstd", "zstd"), ("br;q=0.5, gzip", "gzip"), ("*", "zstd"),
    ("*;q=0, gzip", "gzip"), ("deflate", None), ("GZIP;q=0.3, br;q=0.2", "gzip"),
])
def test_choose_encoding(header, expected):
    assert choose_encoding(header) == expected


def test_metadata_and_qido_decode_to_the_same_json(server, stored_study):
    study = stored_study["study"]
    extra = [image(study=study, series=stored_study["ct"], instance_number=n,
                   patient_id=stored_study["patient_id"]) for n in range(10, 30)]
    assert server.stow(*extra).status_code == 200
    for url in (f"{server.url}/studies/{study}/series/{stored_study['ct']}/metadata",
                f"{server.url}/studies/{study}/metadata",
                f"{server.url}/instances?StudyInstanceUID={study}"):
        plain, plain_body = raw_get(url, "identity")
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        expected = orjson.loads(plain_body)
        for name, decode in DECODE.items():
            response, body = raw_get(url, name)
            assert response.headers["content-encoding"] == name
            assert "Accept-Encoding" in response.headers["vary"]
            assert len(body) < len(plain_body) / 3
            assert orjson.loads(decode(body)) == expected
            if "metadata" in url:
                assert response.headers["etag"] != plain.headers["etag"]


def test_small_answers_are_not_compressed(server, stored_study):
    url = f"{server.url}/studies?PatientID={stored_study['patient_id']}&includefield=00080020"
    response, _ = raw_get(url, "gzip")
    assert response.status_code == 200 and "content-encoding" not in response.headers
