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
import logging
from typing import Any

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom import uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
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
from .limits import DecodeLimitExceeded, attribute_frame_bytes, check_frame, check_total

log = logging.getLogger("dicomweb.pixels")

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
    max_decoded_bytes: int | None = None,
) -> bytes:
    """Return the Part 10 file ``dicom_bytes`` re-encoded in ``target_ts``.

    Group Length elements (gggg,0000), retired in PS3.5 7.2, are not written back, and
    the file meta Media Storage SOP Class/Instance UIDs are made equal to the dataset's
    SOP Class/Instance UIDs if the input disagreed (PS3.10 7.1).

    ``j2k_cr`` (compression ratio) applies to JPEG 2000 lossy (default 10) and
    ``jls_error`` to JPEG-LS near-lossless (default 2). Raises
    :class:`UnsupportedTransferSyntax` when the target cannot be produced (no codec,
    or the pixel data does not fit the target's encoding profile), and
    :class:`DecodeLimitExceeded` before decoding when the frames (by their attributes or
    codestream headers) would decode to more than ``max_decoded_bytes`` together.

    An Icon Image Sequence (PS3.3 C.7.6.1.1.6) with compressed pixel data is decoded to
    native pixels, or dropped when it cannot be: it would otherwise claim the new transfer
    syntax without being encoded in it.
    """
    target = str(target_ts)
    try:
        ds = dcmread(io.BytesIO(dicom_bytes), force=True)
    except Exception as exc:
        log.info("transcoding: cannot parse the stored file: %s", exc)
        raise TranscodeError("the stored instance cannot be parsed") from exc
    meta = getattr(ds, "file_meta", None)
    source = str(meta.get("TransferSyntaxUID", uids.ExplicitVRLittleEndian)) if meta else ""
    if source == target:
        return bytes(dicom_bytes)
    if not can_transcode(source or uids.ExplicitVRLittleEndian, target):
        raise UnsupportedTransferSyntax(target, f"cannot transcode from {source or 'unknown'}")

    if "PixelData" in ds:
        if max_decoded_bytes is not None:
            check_decoded_size(ds, source, max_decoded_bytes)
        frames, photometric = _decode_all(ds)
        _replace_pixel_data(ds, frames, photometric, target, j2k_cr, jls_error)
    _native_icon(ds, source)
    if source == uids.ExplicitVRBigEndian:
        _swap_other_byte_values(ds)
    ds.file_meta.TransferSyntaxUID = uids.UID(target)
    out = io.BytesIO()
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:
        log.info("transcoding: cannot write the dataset: %s", exc)
        raise TranscodeError(f"the instance cannot be written in {uids.UID(target).name}") from exc
    return out.getvalue()


def check_decoded_size(ds: Dataset, source: str, max_bytes: int) -> None:
    """Every frame checked by its attributes and codestream header, and their sum (the
    transcode holds all of them), against ``max_bytes``, before anything is decoded."""
    desc = PixelDescription.from_dataset(ds)
    count = desc.number_of_frames
    if source in NATIVE_TRANSFER_SYNTAXES or not ds["PixelData"].is_undefined_length:
        check_total(attribute_frame_bytes(desc) * count, max_bytes, "the instance's pixel data")
        return
    single = dataclasses.replace(desc, number_of_frames=1)
    total = 0
    try:
        for frame in generate_frames(ds.PixelData, number_of_frames=count):
            total += check_frame(frame, source, single, max_bytes)
            check_total(total, max_bytes, "the instance's pixel data")
    except DecodeLimitExceeded:
        raise
    except Exception as exc:  # malformed encapsulation
        log.info("transcoding: cannot split the encapsulated frames: %s", exc)
        raise UnsupportedTransferSyntax(source, "the encapsulated pixel data is malformed") from exc


def _native_icon(ds: Dataset, source: str) -> None:
    """Decode a compressed icon (its pixel data is in the source syntax) or drop it."""
    icons = ds.get("IconImageSequence")
    if not icons or source in NATIVE_TRANSFER_SYNTAXES:
        return
    for icon in icons:
        if "PixelData" not in icon or not icon["PixelData"].is_undefined_length:
            continue
        try:
            icon.file_meta = FileMetaDataset()
            icon.file_meta.TransferSyntaxUID = uids.UID(source)
            arr = icon.pixel_array
            desc = dataclasses.replace(PixelDescription.from_dataset(icon), number_of_frames=1)
            icon.PixelData = array_to_native_le(arr, desc)
            if desc.photometric_interpretation.startswith("YBR"):
                icon.PhotometricInterpretation = "RGB"  # pixel_array converted the colour
            icon["PixelData"].VR = VR.OB if desc.bits_allocated <= 8 else VR.OW
            icon["PixelData"].is_undefined_length = False
            del icon.file_meta
        except Exception as exc:  # an icon we cannot decode is dropped, not kept broken
            log.info("transcoding: dropping an icon that cannot be decoded: %s", exc)
            del ds.IconImageSequence
            return


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
        log.info("transcoding: decoding %s failed: %s", source, exc)
        raise UnsupportedTransferSyntax(
            str(source), f"the stored {uids.UID(source).name} pixel data cannot be decoded "
            "(corrupt or not what the attributes describe)") from exc
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
    if target in (uids.JPEG2000Lossless, uids.JPEG2000) and photometric == "RGB":
        # PS3.5 8.2.4: colour is compressed with JPEG 2000's own component transform, and
        # the data is then YBR_RCT (reversible) or YBR_ICT (irreversible); see below.
        transformed = "YBR_ICT" if target == uids.JPEG2000 else "YBR_RCT"
        desc = dataclasses.replace(desc, photometric_interpretation=transformed)
    try:
        encoded = [encode_frame(f, target, desc, **options) for f in frames]
    except EncodeError as exc:
        raise UnsupportedTransferSyntax(target, str(exc)) from exc
    ds.PixelData = encapsulate(encoded, has_bot=True)
    elem = ds["PixelData"]
    elem.VR = VR.OB  # PS3.5 A.4: encapsulated Pixel Data is OB, undefined length
    elem.is_undefined_length = True
    if desc.samples_per_pixel == 3 and encoded and uses_j2k_mct(encoded[0]):
        # PS3.5 8.2.4: a JPEG 2000 colour transform makes the data YBR_RCT (reversible)
        # or YBR_ICT (irreversible), whatever it was before encoding.
        ds.PhotometricInterpretation = "YBR_ICT" if target in LOSSY_METHOD else "YBR_RCT"
    if target in LOSSY_METHOD:
        _mark_lossy(ds, target, frames, encoded)


def uses_j2k_mct(codestream: bytes) -> bool:
    """Whether a JPEG 2000 codestream's COD segment (ISO 15444-1 A.6.1) enables the
    multiple component transformation."""
    at = codestream.find(b"\xff\x52", 0, 1 << 16)
    return at >= 0 and len(codestream) > at + 8 and codestream[at + 8] == 1


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
