"""Whole-instance transcoding (PS3.18 8.7.3.5: an instance returned in another
transfer syntax).

Only what must change is changed: the file meta Transfer Syntax UID, Pixel Data (and
its VR / offset tables), Photometric Interpretation and Planar Configuration when
decompression converts YBR to RGB, and the Lossy Image Compression attributes
(PS3.3 C.7.6.1.1.5) when the target is lossy. The SOP Instance UID is kept.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom import uid as uids
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.valuerep import VR

from .codecs import (
    DECODABLE_TRANSFER_SYNTAXES,
    ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES,
    LOSSY_METHOD,
    NATIVE_TRANSFER_SYNTAXES,
    array_to_native_le,
    encode_frame,
)
from .description import PixelDescription
from .errors import EncodeError, TranscodeError, UnsupportedTransferSyntax

#: Native syntaxes a transcode can write (Explicit Big Endian is retired: not produced).
NATIVE_TARGETS: frozenset[str] = frozenset(
    {
        uids.ExplicitVRLittleEndian,
        uids.ImplicitVRLittleEndian,
        uids.DeflatedExplicitVRLittleEndian,
    }
)
#: Default lossy settings used when a lossy target is asked for without options.
DEFAULT_J2K_COMPRESSION_RATIO = 10.0
DEFAULT_JLS_ERROR = 2


def can_transcode(source_ts: str, target_ts: str) -> bool:
    """True when :func:`transcode_instance` can turn ``source_ts`` into ``target_ts``.

    Any decodable syntax can go to a native little-endian syntax; a compressed target
    needs an installed encoder (RLE Lossless, JPEG 2000 (lossless/lossy), JPEG-LS
    (lossless/near-lossless) with pyjpegls). Identity is always possible.
    """
    source, target = str(source_ts), str(target_ts)
    if source == target:
        return True
    if source not in DECODABLE_TRANSFER_SYNTAXES:
        return False
    return target in NATIVE_TARGETS or target in ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES


def transcode_instance(
    dicom_bytes: bytes,
    target_ts: str,
    *,
    j2k_cr: float | None = None,
    jls_error: int | None = None,
) -> bytes:
    """Return the Part 10 file ``dicom_bytes`` re-encoded in ``target_ts``.

    Group Length elements (gggg,0000), retired in PS3.5 7.2, are not written back, and
    the file meta Media Storage SOP Class/Instance UIDs are made equal to the dataset's
    SOP Class/Instance UIDs if the input disagreed (PS3.10 7.1).

    ``j2k_cr`` (compression ratio) applies to JPEG 2000 lossy (default 10) and
    ``jls_error`` to JPEG-LS near-lossless (default 2). Raises
    :class:`UnsupportedTransferSyntax` when the target cannot be produced (no codec,
    or the pixel data does not fit the target's encoding profile).
    """
    target = str(target_ts)
    try:
        ds = dcmread(io.BytesIO(dicom_bytes), force=True)
    except Exception as exc:
        raise TranscodeError(f"cannot read instance: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    source = str(meta.get("TransferSyntaxUID", uids.ExplicitVRLittleEndian)) if meta else ""
    if source == target:
        return bytes(dicom_bytes)
    if not can_transcode(source or uids.ExplicitVRLittleEndian, target):
        raise UnsupportedTransferSyntax(target, f"cannot transcode from {source or 'unknown'}")

    if "PixelData" in ds:
        frames, photometric = _decode_all(ds)
        _replace_pixel_data(ds, frames, photometric, target, j2k_cr, jls_error)
    if source == uids.ExplicitVRBigEndian:
        _swap_other_byte_values(ds)
    ds.file_meta.TransferSyntaxUID = uids.UID(target)
    out = io.BytesIO()
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:
        raise TranscodeError(f"cannot write instance: {exc}") from exc
    return out.getvalue()


#: Bytes per word of the "other" VRs whose values pydicom keeps as raw bytes.
_OTHER_VR_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_other_byte_values(ds: Dataset) -> None:
    """Big to little endian for OW/OL/OF/OD/OV values (PS3.5 7.3); other VRs are
    decoded to Python values by pydicom and re-encoded by the writer."""

    def swap(dataset: Dataset, elem: Any) -> None:
        width = _OTHER_VR_WIDTH.get(str(elem.VR))
        if width is None or elem.keyword == "PixelData" or not elem.value:
            return
        value = bytes(elem.value)
        usable = len(value) - len(value) % width
        words = np.frombuffer(value[:usable], dtype=f">u{width}")
        elem.value = words.astype(f"<u{width}").tobytes() + value[usable:]

    ds.walk(swap)


def _decode_all(ds: Dataset) -> tuple[list[np.ndarray], str]:
    """Decode every frame (YBR converted to RGB); returns frames and new photometric."""
    source = ds.file_meta.TransferSyntaxUID
    decoder = get_decoder(source)
    frames: list[np.ndarray] = []
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        for arr, props in decoder.iter_array(ds, as_rgb=True):
            frames.append(arr)
            photometric = str(props.get("photometric_interpretation", photometric))
    except Exception as exc:
        raise UnsupportedTransferSyntax(str(source), f"cannot decode pixel data: {exc}") from exc
    return frames, photometric


def _replace_pixel_data(
    ds: Dataset,
    frames: list[np.ndarray],
    photometric: str,
    target: str,
    j2k_cr: float | None,
    jls_error: int | None,
) -> None:
    desc = dataclasses.replace(
        PixelDescription.from_dataset(ds),
        photometric_interpretation=photometric,
        planar_configuration=0,
        number_of_frames=1,
    )
    if photometric != ds.get("PhotometricInterpretation"):
        ds.PhotometricInterpretation = photometric
    if desc.samples_per_pixel > 1 and ds.get("PlanarConfiguration", 0) != 0:
        ds.PlanarConfiguration = 0  # decoded and re-encoded samples are interleaved
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]

    if target in NATIVE_TRANSFER_SYNTAXES:
        if desc.bits_allocated == 1:  # frames are packed back to back (PS3.5 8.1.1)
            data = array_to_native_le(np.concatenate([f.ravel() for f in frames]), desc)
        else:
            data = b"".join(array_to_native_le(f, desc) for f in frames)
        ds.PixelData = data + b"\x00" * (len(data) % 2)  # even length (PS3.5 7.1)
        elem = ds["PixelData"]
        elem.VR = VR.OB if desc.bits_allocated <= 8 else VR.OW
        elem.is_undefined_length = False
        return

    options: dict[str, Any] = {}
    if target == uids.JPEG2000:
        options["j2k_cr"] = [float(j2k_cr or DEFAULT_J2K_COMPRESSION_RATIO)]
    if target == uids.JPEGLSNearLossless:
        options["jls_error"] = DEFAULT_JLS_ERROR if jls_error is None else int(jls_error)
    try:
        encoded = [encode_frame(f, target, desc, **options) for f in frames]
    except EncodeError as exc:
        raise UnsupportedTransferSyntax(target, str(exc)) from exc
    ds.PixelData = encapsulate(encoded, has_bot=True)
    elem = ds["PixelData"]
    elem.VR = VR.OB  # PS3.5 A.4: encapsulated Pixel Data is OB, undefined length
    elem.is_undefined_length = True
    if target in LOSSY_METHOD:
        _mark_lossy(ds, target, frames, encoded)


def _mark_lossy(ds: Dataset, target: str, frames: list[np.ndarray], encoded: list[bytes]) -> None:
    """Lossy Image Compression attributes, PS3.3 C.7.6.1.1.5 (values accumulate)."""
    original = sum(f.nbytes for f in frames)
    ratio = original / max(sum(len(e) for e in encoded), 1)
    ds.LossyImageCompression = "01"
    methods = _as_list(ds.get("LossyImageCompressionMethod"))
    ratios = _as_list(ds.get("LossyImageCompressionRatio"))
    ds.LossyImageCompressionMethod = [*methods, LOSSY_METHOD[target]]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.4g}"]


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes, int, float)):
        return [value]
    return list(value)
