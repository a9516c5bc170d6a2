"""Hostile pixel data on the way out, end to end: decode bombs refused before decoding, one
memory budget for concurrent pixel work, long frame lists and large bulk data streamed.

Memory bounds are proven by the server's peak resident memory (VmHWM, tests/memory.py), not
by timing; each server runs with a capped address space so that a regression fails with an
error instead of taking the host's memory.
"""

from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from conftest import start_server, stop_server
from factory import image, parse_multipart, to_bytes
from memory import MIB, peak_growth
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

ADDRESS_SPACE = 6 << 30
NATIVE = 'multipart/related; type="application/octet-stream"'
ELE = "1.2.840.10008.1.2.1"
#: What no error body may carry: exception class names, tracebacks, server paths.
INTERNALS = ("Error", "Exception", "Traceback", "File \"", "/tmp", "/work", ".py")


@pytest.fixture(scope="module")
def guarded(backend, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("hostile"), backend,
                          memory_limit_bytes=ADDRESS_SPACE)
    yield server
    stop_server(server)


def post(server, data: bytes) -> None:
    response = requests.post(f"{server.url}/studies", data=data,
                             headers={"Content-Type": "application/dicom"}, timeout=60)
    assert response.status_code == 200, response.text


def url_of(server, ds) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def assert_clean_error(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    for internal in INTERNALS:
        assert internal not in response.text, response.text


def encapsulated(ds, syntax: str, frame: bytes):
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def jpeg_bomb():
    """A 64 x 64 colour JPEG baseline frame whose SOF claims 65535 x 65535."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, "JPEG")
    frame = bytearray(buffer.getvalue())
    sof = frame.index(b"\xff\xc0")
    struct.pack_into(">HH", frame, sof + 5, 65535, 65535)
    ds = image(rows=64, columns=64)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    return encapsulated(ds, JPEGBaseline8Bit, bytes(frame))


def compressed_bomb(syntax: str):
    """A 64 x 64 J2K or JPEG-LS frame whose SIZ / SOF55 claims 2^31 or 65535 pixels a side."""
    ds = image(rows=64, columns=64)
    ds.compress(syntax, generate_instance_uid=False)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    if syntax == JPEG2000Lossless:
        siz = frame.index(b"\xff\x51") + 2
        struct.pack_into(">II", frame, siz + 4, 1 << 31, 1 << 31)  # Xsiz, Ysiz
        struct.pack_into(">II", frame, siz + 20, 1 << 31, 1 << 31)  # XTsiz, YTsiz
    else:
        sof = frame.index(b"\xff\xf7")
        struct.pack_into(">HH", frame, sof + 5, 65535, 65535)
    return encapsulated(ds, syntax, bytes(frame))


@pytest.mark.parametrize("make", [jpeg_bomb, lambda: compressed_bomb(JPEG2000Lossless),
                                  lambda: compressed_bomb(JPEGLSLossless)],
                         ids=["jpeg-sof", "j2k-siz", "jpeg-ls-sof55"])
def test_decode_bombs_are_refused_before_decoding(guarded, make):
    ds = make()
    data = to_bytes(ds)
    assert len(data) < 4096
    post(guarded, data)
    url = url_of(guarded, ds)
    with peak_growth(guarded.process.pid) as growth:
        rendered = requests.get(url + "/rendered", timeout=60)
        thumbnail = requests.get(url + "/thumbnail", timeout=60)
        frames = requests.get(url + "/frames/1", headers={"Accept": NATIVE}, timeout=60)
        transcoded = requests.get(url, headers={
            "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'},
            timeout=60)
    assert_clean_error(rendered, 422, "codestream declares", "DICOMWEB_MAX_DECODED_BYTES")
    assert_clean_error(thumbnail, 422, "codestream declares")
    assert_clean_error(frames, 406, "codestream declares")
    assert_clean_error(transcoded, 406, "codestream declares")
    assert growth.mib < 100
    assert requests.get(url + "/metadata", timeout=30).status_code == 200


def test_attributes_beyond_the_limit_are_refused(tmp_path, backend):
    server = start_server(tmp_path, backend, env={"DICOMWEB_MAX_DECODED_BYTES": str(1 << 20)},
                          memory_limit_bytes=ADDRESS_SPACE)
    try:
        ds = image(rows=1024, columns=1024)  # 2 MiB decoded
        post(server, to_bytes(ds))
        url = url_of(server, ds)
        assert_clean_error(requests.get(url + "/rendered", timeout=60), 422,
                           "1024 x 1024 pixels", "limit of 1048576 bytes")
        assert requests.get(url + "/frames/1", headers={"Accept": NATIVE},
                            timeout=60).status_code == 200  # sent as stored: nothing decoded
        small = image(rows=256, columns=256)
        post(server, to_bytes(small))
        assert requests.get(url_of(server, small) + "/rendered", timeout=60).status_code == 200
    finally:
        stop_server(server)


def test_concurrent_viewports_share_one_memory_budget(tmp_path, backend):
    budget = 2 << 30
    server = start_server(tmp_path, backend, env={"DICOMWEB_PIXEL_MEMORY_BYTES": str(budget),
                                                  "DICOMWEB_PIXEL_WAIT_SECONDS": "0.5"},
                          memory_limit_bytes=ADDRESS_SPACE)
    try:
        ds = image(rows=512, columns=512)
        post(server, to_bytes(ds))
        url = url_of(server, ds) + "/rendered"
        requests.get(url, timeout=60)  # codecs loaded before measuring

        def big(_: int) -> requests.Response:
            return requests.get(url, params={"viewport": "8192,8192"},
                                headers={"Accept": "image/png"}, timeout=120)

        with peak_growth(server.process.pid) as growth, ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(big, range(4)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        for response in responses:
            if response.status_code == 503:
                assert int(response.headers["Retry-After"]) >= 1
                assert_clean_error(response, 503, "busy", "try again")
            else:
                assert Image.open(io.BytesIO(response.content)).size == (8192, 8192)
        assert growth.bytes < budget, growth.mib
        assert big(0).status_code == 200  # the budget is given back
    finally:
        stop_server(server)


def test_work_larger_than_the_whole_budget_is_refused_at_once(tmp_path, backend):
    server = start_server(tmp_path, backend, env={"DICOMWEB_PIXEL_MEMORY_BYTES": str(256 * MIB)},
                          memory_limit_bytes=ADDRESS_SPACE)
    try:
        ds = image(rows=512, columns=512)
        post(server, to_bytes(ds))
        response = requests.get(url_of(server, ds) + "/rendered",
                                params={"viewport": "8192,8192"}, timeout=60)
        assert_clean_error(response, 422, "DICOMWEB_PIXEL_MEMORY_BYTES")
    finally:
        stop_server(server)


def test_long_frame_lists_are_capped_and_frames_streamed(guarded):
    ds = image(rows=512, columns=512)
    post(guarded, to_bytes(ds))
    url = url_of(guarded, ds)
    assert_clean_error(requests.get(url + "/frames/" + ",".join(["1"] * 4000),
                                    headers={"Accept": NATIVE}, timeout=60),
                       400, "at most 1000 frame numbers")
    with peak_growth(guarded.process.pid) as growth:
        response = requests.get(url + "/frames/" + ",".join(["1"] * 1000),
                                headers={"Accept": NATIVE}, timeout=120)
    assert response.status_code == 200
    parts = parse_multipart(response.headers["content-type"], response.content)
    assert len(parts) == 1000 and all(body == ds.PixelData for _, body in parts)
    assert growth.mib < 128, growth.mib  # 500 MiB of body, one frame at a time


def test_bulk_data_is_streamed_from_the_file(guarded):
    frames = 48
    ds = image(rows=1024, columns=1024, frames=frames)  # 96 MiB of pixel data
    block = ds.private_block(0x0009, "DICOMWEB TEST", create=True)
    block.add_new(0x10, "OB", b"private bytes!")  # inline in the metadata: not in the index
    post(guarded, to_bytes(ds))
    url = url_of(guarded, ds)
    single = {"Accept": "application/octet-stream"}
    with peak_growth(guarded.process.pid) as growth:
        private = requests.get(url + "/bulkdata/00091010", headers=single, timeout=60)
        pixels = requests.get(url + "/bulkdata/7FE00010", headers=single, timeout=120)
    assert private.status_code == 200 and private.content == b"private bytes!"
    assert pixels.status_code == 200 and pixels.content == ds.PixelData
    assert growth.mib < 64, growth.mib
    assert requests.get(url + "/bulkdata/00091099", timeout=60).status_code == 404


def test_a_frame_count_beyond_the_data_is_a_client_error(guarded):
    ds = image(rows=64, columns=64)
    ds.NumberOfFrames = 2**31 - 1
    response = requests.post(f"{guarded.url}/studies", data=to_bytes(ds),
                             headers={"Content-Type": "application/dicom"}, timeout=60)
    if response.status_code != 200:  # rejected at ingest: nothing stored to read back
        return
    url = url_of(guarded, ds)
    for answer in (requests.get(url + "/frames/2", headers={"Accept": NATIVE}, timeout=60),
                   requests.get(url + "/frames/2/rendered", timeout=60)):
        assert 400 <= answer.status_code < 500, answer.text
        for internal in INTERNALS:
            assert internal not in answer.text

