"""Decoded sizes from codestream headers, segmented palettes and the memory budget
(dicomweb.pixels.limits, .palette, .budget), without a server."""

from __future__ import annotations

import struct
import threading
import time
from struct import unpack

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import _expand_segmented_lut
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from dicomweb.pixels.budget import BudgetBusy, BudgetExceeded, MemoryBudget
from dicomweb.pixels.description import PixelDescription
from dicomweb.pixels.limits import DecodeLimitExceeded, check_frame, codestream_shape
from dicomweb.pixels.palette import expand_segmented_lut

DESC = PixelDescription(rows=512, columns=512, bits_allocated=8, bits_stored=8, high_bit=7)


def first_frame(name: str) -> tuple[bytes, str, PixelDescription]:
    ds = dcmread(get_testdata_file(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
    return frame, str(ds.file_meta.TransferSyntaxUID), PixelDescription.from_dataset(ds)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG-LL.dcm",
                                  "JPEGLSNearLossless_16.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_RLE.dcm", "SC_rgb_rle.dcm"])
def test_the_header_of_real_codestreams_matches_the_attributes(name):
    frame, ts, desc = first_frame(name)
    shape = codestream_shape(frame, ts, desc)
    assert shape is not None
    assert (shape.rows, shape.columns) == (desc.rows, desc.columns)
    samples = desc.samples_per_pixel * (1 if ts != RLELossless else (desc.bits_allocated // 8))
    assert shape.components == samples


def jpeg_claiming(rows: int, columns: int, marker: int = 0xC0) -> bytes:
    """SOI, a frame header (SOFn or SOF55) claiming rows x columns, and junk."""
    sof = struct.pack(">BBHBHHB", 0xFF, marker, 11, 8, rows, columns, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + sof + b"\x00" * 2000


def j2k_claiming(size: int) -> bytes:
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, size, size, 0, 0, size, size, 0, 0, 1)
    return b"\xff\x4f\xff\x51" + siz + b"\x07\x01\x01" + b"\x00" * 2000


@pytest.mark.parametrize(("frame", "ts"), [
    (jpeg_claiming(65535, 65535), JPEGBaseline8Bit),
    (jpeg_claiming(65535, 65535, 0xF7), JPEGLSLossless),
    (j2k_claiming(1 << 31), JPEG2000Lossless),
])
def test_a_codestream_claiming_more_than_the_limit_is_refused_before_decoding(frame, ts):
    with pytest.raises(DecodeLimitExceeded) as raised:
        check_frame(frame, ts, DESC, 1 << 30)
    assert "codestream declares" in str(raised.value)
    assert "512 x 512" in str(raised.value)


def test_rle_segments_and_attributes_bound_the_decoded_size():
    header = struct.pack("<16I", 15, *([64] * 15))
    with pytest.raises(DecodeLimitExceeded):
        check_frame(header, RLELossless, DESC, 512 * 512 * 14)
    assert check_frame(header, RLELossless, DESC, 512 * 512 * 15) == 512 * 512 * 15
    huge = PixelDescription(rows=65535, columns=65535)
    with pytest.raises(DecodeLimitExceeded) as raised:
        check_frame(header, RLELossless, huge, 1 << 30)
    assert "65535 x 65535 pixels" in str(raised.value)


def test_segmented_palette_expands_as_pydicom_does():
    ds = dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    for colour in ("Red", "Green", "Blue"):
        raw = bytes(ds[f"Segmented{colour}PaletteColorLookupTableData"].value)
        expected = _expand_segmented_lut(unpack(f"<{len(raw) // 2}H", raw), "<H")
        mine = np.frombuffer(expand_segmented_lut(raw, 16, 65536), "<u2")
        assert np.array_equal(mine, expected[: mine.size]) and mine.size == 65536


def test_hostile_segmented_palette_cannot_grow_past_its_entries():
    # An indirect segment pointing at itself, and linear segments of 65535 entries.
    words = [1, 65535, 9] * 4 + [2, 65535, 0, 0]
    data = struct.pack(f"<{len(words)}H", *words)
    out = expand_segmented_lut(data, 16, 256)
    assert len(out) == 512  # 256 entries of 2 bytes
    desc = PixelDescription.from_dataset(dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm")))
    assert desc.red_palette is not None and len(desc.red_palette.data or b"") == 131072


def test_budget_admits_by_bytes_and_answers_busy_then_recovers():
    budget = MemoryBudget(100, wait_s=0.2)
    with pytest.raises(BudgetExceeded), budget.reserve(101, "x"):
        pass
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with budget.reserve(80, "first"):
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(5)
    with budget.reserve(20, "fits beside"):
        assert budget.held == 100
    with pytest.raises(BudgetBusy) as busy, budget.reserve(30, "does not fit"):
        pass
    assert busy.value.retry_after_s >= 1
    budget.wait_s = 5
    assert budget.fits_now(20) and not budget.fits_now(21)
    started = time.monotonic()
    with pytest.raises(BudgetBusy), budget.reserve(30, "on the event loop", wait=False):
        pass
    assert time.monotonic() - started < 1  # busy at once: the loop never waits
    threading.Timer(0.05, release.set).start()
    started = time.monotonic()
    with budget.reserve(30, "waits for the first"):
        assert time.monotonic() - started < 4
    worker.join()
    assert budget.held == 0

