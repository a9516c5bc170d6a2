"""Frame decoding/encoding against pydicom's own ``pixel_array`` on its test files."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from dicomweb.pixels.codecs import (
    DECODABLE_TRANSFER_SYNTAXES,
    ENCODABLE_TRANSFER_SYNTAXES,
    decode_frame,
    decode_frame_with_info,
    default_transfer_syntax_for_media_type,
    encode_frame,
    frame_to_native_le,
    is_native,
    media_type_for_transfer_syntax,
    transfer_syntaxes_for_media_type,
)
from dicomweb.pixels.description import PixelDescription
from dicomweb.pixels.errors import DecodeError, EncodeError, UnsupportedTransferSyntax

FILES = [
    "JPEG2000.dcm",
    "693_J2KI.dcm",
    "MR_small_jp2klossless.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "examples_jpeg2k.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_rle_32bit_2frame.dcm",
    "rtdose_rle.dcm",
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # YBR_FULL_422 JPEG baseline
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "examples_ybr_color.dcm",  # multi-frame YBR_FULL_422
    "JPGExtended.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "MR_small.dcm",
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "ExplVR_BigEnd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "rtdose.dcm",
    "rtdose_expb.dcm",
    "examples_palette.dcm",
]
# Files only in the downloadable pydicom-data set: used when present.
OPTIONAL_FILES = [
    "JPEGLosslessP14SV1_1s_1f_8b.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
]


def _path(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available offline")
    return path


def frames_of(ds: pydicom.Dataset, desc: PixelDescription) -> list[bytes]:
    """What the store reads per frame: native slices or joined fragments."""
    ts = ds.file_meta.TransferSyntaxUID
    n = desc.number_of_frames
    if is_native(ts):
        data = ds.PixelData
        if n == 1:
            return [data]
        size = desc.frame_length
        return [data[i * size : (i + 1) * size] for i in range(n)]
    return list(generate_frames(ds.PixelData, number_of_frames=n))


def test_description_from_json_equals_from_dataset() -> None:
    for name in ("CT_small.dcm", "examples_palette.dcm", "MR_small_bigendian.dcm"):
        ds = pydicom.dcmread(_path(name))
        from_json = PixelDescription.from_dicom_json(ds.to_json_dict(bulk_data_threshold=1 << 30))
        assert from_json == PixelDescription.from_dataset(ds)


def test_description_degrades_gracefully() -> None:
    desc = PixelDescription.from_dicom_json(
        {
            "00280010": {"vr": "US", "Value": [4]},
            "00280011": {"vr": "US", "Value": [5]},
            "00281050": {"vr": "DS", "Value": ["40", 41]},
            "00281051": {"vr": "DS"},
            "00281101": {"vr": "US", "Value": [256, 0, 16]},
            "00281201": {"vr": "OW", "BulkDataURI": "http://x/bulk/red"},
            "00280030": {"vr": "DS", "Value": ["oops", 1]},
        }
    )
    assert (desc.rows, desc.columns, desc.bits_allocated) == (4, 5, 16)
    assert desc.window_centers == (40.0, 41.0)
    assert desc.window_widths == ()
    assert desc.pixel_spacing is None
    assert desc.red_palette is not None and desc.red_palette.data is None
    assert desc.red_palette.bulk_data_uri == "http://x/bulk/red"
    assert not desc.has_palette_data
    assert PixelDescription.from_dicom_json({}).rows == 0


def test_description_enhanced_per_frame() -> None:
    ds = pydicom.Dataset()
    ds.Rows = ds.Columns = 2
    ds.NumberOfFrames = 2
    shared = pydicom.Dataset()
    measures = pydicom.Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 2
    shared.PixelMeasuresSequence = [measures]
    orient = pydicom.Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(2):
        item, pos = pydicom.Dataset(), pydicom.Dataset()
        pos.ImagePositionPatient = [0, 0, k * 2.0]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    for desc in (
        PixelDescription.from_dataset(ds),
        PixelDescription.from_dicom_json(ds.to_json_dict()),
    ):
        assert desc.pixel_spacing == (0.5, 0.6)
        assert desc.frame_info(1).image_position_patient == (0.0, 0.0, 2.0)
        assert desc.for_frame(1).image_orientation_patient == (1, 0, 0, 0, 1, 0)
        assert desc.for_frame(0).slice_thickness == 2.0


@pytest.mark.parametrize("name", FILES + OPTIONAL_FILES)
def test_decode_matches_pixel_array(name: str) -> None:
    ds = pydicom.dcmread(_path(name))
    ts = ds.file_meta.TransferSyntaxUID
    assert ts in DECODABLE_TRANSFER_SYNTAXES
    desc = PixelDescription.from_dicom_json(ds.to_json_dict(bulk_data_threshold=1 << 30))
    arrays = [decode_frame(f, ts, desc) for f in frames_of(ds, desc)]
    got = np.stack(arrays) if len(arrays) > 1 else arrays[0]
    expected = ds.pixel_array
    assert got.shape == expected.shape
    # same codec plugins as pydicom: lossy decodes are identical too
    np.testing.assert_array_equal(got, expected)


def test_broken_codestream_raises_decode_error() -> None:
    # JPEG-lossy.dcm has a corrupt 12-bit scan that no installed plugin accepts
    ds = pydicom.dcmread(_path("JPEG-lossy.dcm"))
    desc = PixelDescription.from_dataset(ds)
    (frame,) = frames_of(ds, desc)
    with pytest.raises(DecodeError):
        decode_frame(frame, ds.file_meta.TransferSyntaxUID, desc)


def test_ybr_jpeg_reports_rgb() -> None:
    ds = pydicom.dcmread(_path("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    desc = PixelDescription.from_dataset(ds)
    assert desc.photometric_interpretation == "YBR_FULL_422"
    (frame,) = frames_of(ds, desc)
    decoded = decode_frame_with_info(frame, ds.file_meta.TransferSyntaxUID, desc)
    assert decoded.photometric_interpretation == "RGB"
    native, photometric = frame_to_native_le(frame, ds.file_meta.TransferSyntaxUID, desc)
    assert photometric == "RGB"
    assert native == decoded.pixels.astype("<u1").tobytes()


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "CT_small.dcm"])
def test_frame_to_native_le(name: str) -> None:
    ds = pydicom.dcmread(_path(name))
    desc = PixelDescription.from_dataset(ds)
    (frame,) = frames_of(ds, desc)
    native, photometric = frame_to_native_le(frame, ds.file_meta.TransferSyntaxUID, desc)
    assert photometric == "MONOCHROME2"
    assert native == ds.pixel_array.astype("<i2").tobytes()


@pytest.mark.parametrize(
    "ts",
    sorted(
        ENCODABLE_TRANSFER_SYNTAXES
        & {
            uids.ExplicitVRLittleEndian,
            uids.RLELossless,
            uids.JPEG2000Lossless,
            uids.JPEGLSLossless,
        }
    ),
)
@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "examples_rgb_color.dcm"])
def test_encode_lossless_round_trip(ts: str, name: str) -> None:
    ds = pydicom.dcmread(_path(name))
    desc = PixelDescription.from_dataset(ds)
    arr = ds.pixel_array
    encoded = encode_frame(arr, ts, desc)
    np.testing.assert_array_equal(decode_frame(encoded, ts, desc), arr)


def test_encode_lossy_j2k_is_close() -> None:
    ds = pydicom.dcmread(_path("CT_small.dcm"))
    desc = PixelDescription.from_dataset(ds)
    arr = ds.pixel_array
    encoded = encode_frame(arr, uids.JPEG2000, desc, j2k_cr=[10])
    back = decode_frame(encoded, uids.JPEG2000, desc)
    assert np.abs(back.astype(float) - arr).mean() < 20
    assert len(encoded) < arr.nbytes / 5


def test_encode_errors() -> None:
    desc = PixelDescription(rows=2, columns=2)
    with pytest.raises(UnsupportedTransferSyntax):
        encode_frame(np.zeros((2, 2), np.uint16), uids.JPEGBaseline8Bit + ".9", desc)
    with pytest.raises(EncodeError):
        encode_frame(np.zeros((3, 2), np.uint16), uids.RLELossless, desc)


def test_decode_errors() -> None:
    desc = PixelDescription(rows=8, columns=8)
    with pytest.raises(UnsupportedTransferSyntax):
        decode_frame(b"\x00" * 128, "1.2.3.4", desc)
    with pytest.raises(DecodeError):
        decode_frame(b"\x00" * 10, uids.ExplicitVRLittleEndian, desc)
    with pytest.raises(DecodeError):
        decode_frame(b"\xff\xd8garbage", uids.JPEG2000Lossless, desc)


def test_bits_allocated_1_native() -> None:
    ds = pydicom.dcmread(_path("liver_1frame.dcm"))
    desc = PixelDescription.from_dataset(ds)
    arr = decode_frame(ds.PixelData, ds.file_meta.TransferSyntaxUID, desc)
    np.testing.assert_array_equal(arr, ds.pixel_array)
    native, _ = frame_to_native_le(ds.PixelData, ds.file_meta.TransferSyntaxUID, desc)
    assert native == ds.PixelData[: desc.frame_length]


def test_signed_description_dtype() -> None:
    desc = dataclasses.replace(PixelDescription(rows=1, columns=2), pixel_representation=1)
    out = encode_frame(np.array([[-1, 2]], np.int16), uids.ExplicitVRLittleEndian, desc)
    assert out == np.array([-1, 2], "<i2").tobytes()


@pytest.mark.parametrize(
    ("ts", "media_type"),
    [
        (uids.JPEGBaseline8Bit, "image/jpeg"),
        (uids.JPEGLosslessSV1, "image/jpeg"),
        (uids.JPEGLSLossless, "image/jls"),
        (uids.JPEG2000Lossless, "image/jp2"),
        (uids.JPEG2000MC, "image/jpx"),
        (uids.HTJ2KLossless, "image/jphc"),
        (uids.RLELossless, "image/dicom-rle"),
        (uids.ExplicitVRLittleEndian, "application/octet-stream"),
        (uids.MPEG4HP41, "video/mp4"),
    ],
)
def test_media_types(ts: str, media_type: str) -> None:
    assert media_type_for_transfer_syntax(ts) == media_type
    assert ts in transfer_syntaxes_for_media_type(media_type)


def test_media_type_defaults_and_reverse() -> None:
    assert default_transfer_syntax_for_media_type("image/jpeg") == uids.JPEGLosslessSV1
    assert default_transfer_syntax_for_media_type("image/jp2; x=1") == uids.JPEG2000Lossless
    assert transfer_syntaxes_for_media_type("image/x-dicom-rle") == {uids.RLELossless}
    with pytest.raises(UnsupportedTransferSyntax):
        media_type_for_transfer_syntax("1.2.3")
    with pytest.raises(UnsupportedTransferSyntax):
        default_transfer_syntax_for_media_type("image/bmp")
