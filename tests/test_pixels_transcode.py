"""Whole-instance transcoding round trips keep every non-pixel attribute."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.data import get_testdata_file

from dicomweb.pixels.codecs import ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES
from dicomweb.pixels.errors import TranscodeError, UnsupportedTransferSyntax
from dicomweb.pixels.transcode import can_transcode, transcode_instance

#: Attributes a transcode may change (PS3.5 / PS3.3 C.7.6.1.1.5).
PIXEL_KEYWORDS = {
    "PixelData",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "LossyImageCompression",
    "LossyImageCompressionMethod",
    "LossyImageCompressionRatio",
}


def _read(name: str) -> tuple[bytes, pydicom.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available offline")
    with open(path, "rb") as fh:
        raw = fh.read()
    return raw, pydicom.dcmread(io.BytesIO(raw))


def _assert_same_attributes(before: pydicom.Dataset, after: pydicom.Dataset) -> None:
    def kept(ds: pydicom.Dataset) -> dict:
        return {
            e.tag: e.value
            for e in ds
            if e.keyword not in PIXEL_KEYWORDS and e.tag.element != 0  # group lengths
        }

    a, b = kept(before), kept(after)
    assert a.keys() == b.keys()
    for tag in a:
        assert a[tag] == b[tag], tag
    # PS3.10 7.1: the Media Storage UIDs equal the dataset's SOP Class/Instance UIDs
    assert after.file_meta.MediaStorageSOPInstanceUID == before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPClassUID == before.SOPClassUID


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "image_dfl.dcm",
        "rtdose_expb.dcm",
    ],
)
def test_lossless_to_explicit_le(name: str) -> None:
    raw, ds = _read(name)
    out = transcode_instance(raw, uids.ExplicitVRLittleEndian)
    result = pydicom.dcmread(io.BytesIO(out))
    assert result.file_meta.TransferSyntaxUID == uids.ExplicitVRLittleEndian
    np.testing.assert_array_equal(result.pixel_array, ds.pixel_array)
    _assert_same_attributes(ds, result)


@pytest.mark.parametrize(
    "target",
    sorted(
        ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES
        & {uids.RLELossless, uids.JPEG2000Lossless, uids.JPEGLSLossless}
    ),
)
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"])
def test_native_to_lossless_compressed(target: str, name: str) -> None:
    raw, ds = _read(name)
    assert can_transcode(ds.file_meta.TransferSyntaxUID, target)
    out = transcode_instance(raw, target)
    result = pydicom.dcmread(io.BytesIO(out))
    assert result.file_meta.TransferSyntaxUID == target
    assert result["PixelData"].is_undefined_length
    np.testing.assert_array_equal(result.pixel_array, ds.pixel_array)
    _assert_same_attributes(ds, result)
    # and back again
    back = pydicom.dcmread(io.BytesIO(transcode_instance(out, uids.ExplicitVRLittleEndian)))
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def test_ybr_jpeg_to_native_becomes_rgb() -> None:
    raw, ds = _read("SC_rgb_dcmtk_+eb+cy+np.dcm")
    result = pydicom.dcmread(io.BytesIO(transcode_instance(raw, uids.ExplicitVRLittleEndian)))
    assert result.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(result.pixel_array, ds.pixel_array)
    _assert_same_attributes(ds, result)


def test_lossy_target_sets_lossy_attributes() -> None:
    raw, ds = _read("CT_small.dcm")
    result = pydicom.dcmread(io.BytesIO(transcode_instance(raw, uids.JPEG2000, j2k_cr=8)))
    assert result.LossyImageCompression == "01"
    methods = result.LossyImageCompressionMethod
    assert "ISO_15444_1" in ([methods] if isinstance(methods, str) else list(methods))
    assert result.SOPInstanceUID == ds.SOPInstanceUID
    diff = np.abs(result.pixel_array.astype(float) - ds.pixel_array)
    assert diff.mean() < 20


def test_identity_returns_input() -> None:
    raw, _ = _read("CT_small.dcm")
    assert transcode_instance(raw, uids.ExplicitVRLittleEndian) == raw


def test_unsupported_targets() -> None:
    raw, _ = _read("CT_small.dcm")
    assert not can_transcode(uids.ExplicitVRLittleEndian, uids.JPEGBaseline8Bit)
    assert not can_transcode("1.2.3.4", uids.ExplicitVRLittleEndian)
    with pytest.raises(UnsupportedTransferSyntax):
        transcode_instance(raw, uids.JPEGBaseline8Bit)
    with pytest.raises(ValueError):  # UnsupportedTransferSyntax is a ValueError
        transcode_instance(raw, uids.ExplicitVRBigEndian)
    # 32-bit dose does not fit the RLE / JPEG-LS encoding profiles (PS3.5 8.2)
    dose, _ = _read("rtdose.dcm")
    with pytest.raises(UnsupportedTransferSyntax):
        transcode_instance(dose, uids.JPEGLSLossless)


def test_unreadable_input() -> None:
    with pytest.raises(TranscodeError):
        transcode_instance(b"not dicom at all", uids.ExplicitVRLittleEndian)
