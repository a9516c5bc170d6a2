"""Every big-endian file of pydicom's test files and pydicom-data against its little-endian
twin, end to end: frames, rendered images and the instance transcoded to Explicit VR Little
Endian give the twin's pixels (PS3.5 8.1.1, 8.2: byte order follows Bits Allocated; OW words
swap, PS3.5 7.3). Palette Color LUTs, plain and segmented (PS3.3 C.7.6.3.1.5, C.7.9), render
as pydicom applies them."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import requests
from factory import parse_multipart
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.pixels import apply_color_lut
from pydicom.pixels.utils import pack_bits
from test_sources import instances_accept, post, with_new_uids

BIG_ENDIAN = "1.2.840.10008.1.2.2"
ELE = "1.2.840.10008.1.2.1"
NATIVE = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
#: Each big-endian file and its little-endian twin (same pixels, pydicom says so too).
TWINS = {
    "OBXXXX1A_expb.dcm": "OBXXXX1A.dcm",
    "OBXXXX1A_expb_2frame.dcm": "OBXXXX1A_2frame.dcm",
    "SC_rgb_expb.dcm": "SC_rgb.dcm",
    "SC_rgb_expb_2frame.dcm": "SC_rgb_2frame.dcm",
    "SC_rgb_expb_16bit.dcm": "SC_rgb_16bit.dcm",
    "SC_rgb_expb_16bit_2frame.dcm": "SC_rgb_16bit_2frame.dcm",
    "SC_rgb_expb_32bit.dcm": "SC_rgb_32bit.dcm",
    "SC_rgb_expb_32bit_2frame.dcm": "SC_rgb_32bit_2frame.dcm",
    "emri_small_big_endian.dcm": "emri_small.dcm",
    "gdcm-US-ALOKA-16_big.dcm": "gdcm-US-ALOKA-16.dcm",
    "liver_expb.dcm": "liver.dcm",
    "liver_expb_1frame.dcm": "liver_1frame.dcm",
    "MR_small_bigendian.dcm": "MR_small.dcm",
    "MR_small_expb.dcm": "MR_small.dcm",
    "SC_rgb_small_odd_big_endian.dcm": "SC_rgb_small_odd.dcm",
    "rtdose_expb.dcm": "rtdose.dcm",
    "rtdose_expb_1frame.dcm": "rtdose_1frame.dcm",
    "ExplVR_BigEnd.dcm": None,  # no twin: pydicom's own decoding is the reference
}


def big_endian_files() -> list[str]:
    names = []
    for path in get_testdata_files("*"):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # files pydicom itself cannot read are not ours to test
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and meta.get("TransferSyntaxUID") == BIG_ENDIAN:
            names.append(Path(path).name)
    return sorted(names)


def test_every_big_endian_test_file_has_a_twin_here():
    found = big_endian_files()
    assert len(found) >= 18, found  # pydicom-data provides most of them
    assert set(found) <= set(TWINS), set(found) - set(TWINS)


def native_bytes(frame: np.ndarray, ds) -> bytes:
    """A frame as stored little endian: bit-packed at 1 bit, colour planes apart when the
    Planar Configuration is 1 (frames are sent as stored, PS3.18 8.7.3.5)."""
    if ds.BitsAllocated == 1:
        return pack_bits(frame.astype(np.uint8), pad=False)
    if ds.get("SamplesPerPixel", 1) > 1 and ds.get("PlanarConfiguration", 0) == 1:
        frame = np.moveaxis(frame, -1, 0)
    return np.ascontiguousarray(frame.astype(frame.dtype.newbyteorder("<"))).tobytes()


def png(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(BytesIO(response.content)))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_big_endian_file_serves_its_twins_pixels(server, name):
    data, ds = with_new_uids(get_testdata_file(name))
    post(server, data)
    ds = dcmread(BytesIO(data))
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    assert ds.file_meta.TransferSyntaxUID == BIG_ENDIAN
    twin_name = TWINS[name]
    twin = dcmread(get_testdata_file(twin_name)) if twin_name else ds
    reference = twin.pixel_array
    count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = reference if count > 1 else reference[None]
    url = (f"{server.url}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}")

    numbers = ",".join(str(n) for n in range(1, count + 1))
    response = requests.get(f"{url}/frames/{numbers}", headers={"Accept": NATIVE}, timeout=60)
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.headers["content-type"], response.content)
    for (_, body), frame in zip(parts, frames, strict=True):
        expected = native_bytes(frame, ds)
        assert body[: len(expected)] == expected

    response = requests.get(url, headers=instances_accept(ELE), timeout=60)
    assert response.status_code == 200
    (_, body), = parse_multipart(response.headers["content-type"], response.content)
    assert np.array_equal(dcmread(BytesIO(body)).pixel_array, reference)

    rendered = png(requests.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=60))
    if twin_name:
        twin_data, stored = with_new_uids(get_testdata_file(twin_name))
        post(server, twin_data)
        twin_url = (f"{server.url}/studies/{stored.StudyInstanceUID}/series/"
                    f"{stored.SeriesInstanceUID}/instances/{stored.SOPInstanceUID}")
        expected = png(requests.get(f"{twin_url}/rendered", headers={"Accept": "image/png"},
                                    timeout=60))
        assert np.array_equal(rendered, expected)


@pytest.mark.parametrize("name", ["OBXXXX1A_expb.dcm", "OBXXXX1A.dcm",
                                  "gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_color_renders_through_its_lut(server, name):
    """Plain (OBXXXX1A) and segmented (US-ALOKA-16, PS3.3 C.7.9) Palette Color LUTs, in
    either byte order, render as pydicom's apply_color_lut (16-bit entries to 8 bits)."""
    data, ds = with_new_uids(get_testdata_file(name))
    post(server, data)
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    rendered = png(requests.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"},
                                timeout=60)).astype(int)
    # pydicom applies a big-endian file's LUT unswapped: the twin is the reference.
    source = dcmread(get_testdata_file(TWINS.get(name) or name))
    pixels = source.pixel_array
    expected = apply_color_lut(pixels, source).astype(float) * (255.0 / 65535.0)
    assert rendered.shape == expected.shape
    assert np.abs(rendered - np.rint(expected)).max() <= 1
    assert rendered.mean() > 5  # not the near-black of a byte-swapped LUT
