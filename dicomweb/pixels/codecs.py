"""Frame decoding/encoding over pydicom's pixel codec API (``pydicom.pixels``).

A *frame* is the raw bytes the store reads with one seek: for native transfer syntaxes
the frame's slice of Pixel Data (little endian already for Deflated, whose dataset was
inflated at ingest), for encapsulated syntaxes the frame's fragments joined
(PS3.5 A.4).

Decodable (:data:`DECODABLE_TRANSFER_SYNTAXES`, filtered at import by the plugins that
are actually installed):

* native: Implicit VR LE ``1.2.840.10008.1.2``, Explicit VR LE ``1.2.840.10008.1.2.1``,
  Encapsulated Uncompressed Explicit VR LE ``1.2.840.10008.1.2.1.98``,
  Deflated Explicit VR LE ``1.2.840.10008.1.2.1.99``, Explicit VR BE ``1.2.840.10008.1.2.2``
* JPEG Baseline ``.4.50``, Extended ``.4.51``, Lossless ``.4.57``, Lossless SV1 ``.4.70``
* JPEG-LS Lossless ``.4.80`` and Near-Lossless ``.4.81``
* JPEG 2000 Lossless ``.4.90`` and lossy ``.4.91``
* HTJ2K ``.4.201``/``.4.202``/``.4.203`` (pylibjpeg-openjpeg >= 2.4)
* RLE Lossless ``1.2.840.10008.1.2.5``

Encodable (:data:`ENCODABLE_TRANSFER_SYNTAXES`): Explicit VR LE (and Implicit VR LE,
Encapsulated Uncompressed: same frame bytes), RLE Lossless, JPEG 2000 Lossless and
JPEG 2000 (lossy, needs ``j2k_cr`` or ``j2k_psnr``) via pylibjpeg-openjpeg, JPEG-LS
Lossless and Near-Lossless (``jls_error``) when ``pyjpegls`` is installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import uid as uids
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder
from pydicom.pixels.utils import pack_bits

from .description import PixelDescription
from .errors import DecodeError, EncodeError, UnsupportedTransferSyntax

ENCAPSULATED_UNCOMPRESSED_LE = "1.2.840.10008.1.2.1.98"
log = logging.getLogger("dicomweb.pixels")

#: Transfer syntaxes whose frames are plain native pixels.
NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        uids.ImplicitVRLittleEndian,
        uids.ExplicitVRLittleEndian,
        ENCAPSULATED_UNCOMPRESSED_LE,
        uids.DeflatedExplicitVRLittleEndian,
        uids.ExplicitVRBigEndian,
    }
)
#: Native syntaxes whose frame bytes are little endian.
_NATIVE_LE = NATIVE_TRANSFER_SYNTAXES - {uids.ExplicitVRBigEndian}

_COMPRESSED_CANDIDATES = (
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.HTJ2KLossless,
    uids.HTJ2KLosslessRPCL,
    uids.HTJ2K,
    uids.RLELossless,
)
#: Lossless compressed syntaxes (decoding gives back the original pixels exactly).
LOSSLESS_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        uids.JPEGLossless,
        uids.JPEGLosslessSV1,
        uids.JPEGLSLossless,
        uids.JPEG2000Lossless,
        uids.HTJ2KLossless,
        uids.HTJ2KLosslessRPCL,
        uids.RLELossless,
    }
)
#: Lossy compression method codes for Lossy Image Compression Method (PS3.3 C.7.6.1.1.5).
LOSSY_METHOD: dict[str, str] = {
    uids.JPEGBaseline8Bit: "ISO_10918_1",
    uids.JPEGExtended12Bit: "ISO_10918_1",
    uids.JPEGLSNearLossless: "ISO_14495_1",
    uids.JPEG2000: "ISO_15444_1",
    uids.HTJ2K: "ISO_15444_15",
}


def _available_decoder(ts: str) -> bool:
    try:
        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError):
        return False


def _available_encoder(ts: str) -> bool:
    try:
        return bool(get_encoder(ts).is_available)
    except (NotImplementedError, ValueError):
        return False


#: Every transfer syntax :func:`decode_frame` accepts with the installed plugins.
DECODABLE_TRANSFER_SYNTAXES: frozenset[str] = NATIVE_TRANSFER_SYNTAXES | frozenset(
    ts for ts in _COMPRESSED_CANDIDATES if _available_decoder(ts)
)
#: Compressed syntaxes :func:`encode_frame` can produce with the installed plugins.
ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    ts
    for ts in (
        uids.RLELossless,
        uids.JPEG2000Lossless,
        uids.JPEG2000,
        uids.JPEGLSLossless,
        uids.JPEGLSNearLossless,
    )
    if _available_encoder(ts)
)
#: Every transfer syntax :func:`encode_frame` can produce.
ENCODABLE_TRANSFER_SYNTAXES: frozenset[str] = (
    frozenset(
        {uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian, ENCAPSULATED_UNCOMPRESSED_LE}
    )
    | ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES
)


def is_native(ts_uid: str) -> bool:
    return str(ts_uid) in NATIVE_TRANSFER_SYNTAXES


def is_lossy(ts_uid: str) -> bool:
    return str(ts_uid) in LOSSY_METHOD


def can_decode(ts_uid: str) -> bool:
    return str(ts_uid) in DECODABLE_TRANSFER_SYNTAXES


def can_encode(ts_uid: str) -> bool:
    return str(ts_uid) in ENCODABLE_TRANSFER_SYNTAXES


# ---------------------------------------------------------------------------------------
# Media types: PS3.18 Table 8.7.3-5 (pixel data media types and their transfer syntaxes).
# ---------------------------------------------------------------------------------------
_MEDIA_TYPES: dict[str, str] = {
    uids.JPEGBaseline8Bit: "image/jpeg",
    uids.JPEGExtended12Bit: "image/jpeg",
    uids.JPEGLossless: "image/jpeg",
    uids.JPEGLosslessSV1: "image/jpeg",
    uids.JPEGLSLossless: "image/jls",
    uids.JPEGLSNearLossless: "image/jls",
    uids.JPEG2000Lossless: "image/jp2",
    uids.JPEG2000: "image/jp2",
    uids.JPEG2000MCLossless: "image/jpx",
    uids.JPEG2000MC: "image/jpx",
    uids.HTJ2KLossless: "image/jphc",
    uids.HTJ2KLosslessRPCL: "image/jphc",
    uids.HTJ2K: "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111": "image/jxl",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112": "image/jxl",  # JPEG XL
    uids.RLELossless: "image/dicom-rle",
    uids.MPEG2MPML: "video/mpeg",
    uids.MPEG2MPHL: "video/mpeg",
    uids.MPEG4HP41: "video/mp4",
    uids.MPEG4HP41BD: "video/mp4",
    uids.MPEG4HP422D: "video/mp4",
    uids.MPEG4HP423D: "video/mp4",
    uids.MPEG4HP42STEREO: "video/mp4",
    uids.HEVCMP51: "video/H265",
    uids.HEVCM10P51: "video/H265",
}
for _ts in NATIVE_TRANSFER_SYNTAXES:
    _MEDIA_TYPES[_ts] = "application/octet-stream"

#: Default transfer syntax of each media type (the "(default)" rows of the table).
_DEFAULT_TS: dict[str, str] = {
    "image/jpeg": uids.JPEGLosslessSV1,
    "image/jls": uids.JPEGLSLossless,
    "image/jp2": uids.JPEG2000Lossless,
    "image/jpx": uids.JPEG2000MCLossless,
    "image/jphc": uids.HTJ2KLossless,
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "image/dicom-rle": uids.RLELossless,
    "image/x-dicom-rle": uids.RLELossless,  # pre-2017 name still sent by some clients
    "video/mpeg": uids.MPEG2MPML,
    "video/mp4": uids.MPEG4HP41,
    "video/H265": uids.HEVCMP51,
    "application/octet-stream": uids.ExplicitVRLittleEndian,
}


def media_type_for_transfer_syntax(ts_uid: str) -> str:
    """Media type of a frame/bulk data encoded in ``ts_uid`` (PS3.18 Table 8.7.3-5).

    Raises :class:`UnsupportedTransferSyntax` for an unknown UID.
    """
    try:
        return _MEDIA_TYPES[str(ts_uid)]
    except KeyError:
        raise UnsupportedTransferSyntax(ts_uid, "no media type known") from None


def transfer_syntaxes_for_media_type(media_type: str) -> frozenset[str]:
    """All transfer syntaxes that may be sent as ``media_type`` (case-insensitive)."""
    wanted = _normalise_media_type(media_type)
    if wanted == "image/x-dicom-rle":
        wanted = "image/dicom-rle"
    return frozenset(ts for ts, mt in _MEDIA_TYPES.items() if mt.lower() == wanted)


def default_transfer_syntax_for_media_type(media_type: str) -> str:
    """The default transfer syntax of ``media_type`` (PS3.18 Table 8.7.3-5)."""
    wanted = _normalise_media_type(media_type)
    for mt, ts in _DEFAULT_TS.items():
        if mt.lower() == wanted:
            return ts
    raise UnsupportedTransferSyntax("", f"no transfer syntax for media type {media_type!r}")


def _normalise_media_type(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame and the Image Pixel values that describe it after decoding."""

    pixels: np.ndarray
    photometric_interpretation: str
    planar_configuration: int = 0


def _pixel_options(desc: PixelDescription, ts_uid: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "rows": desc.rows,
        "columns": desc.columns,
        "samples_per_pixel": desc.samples_per_pixel,
        "bits_allocated": desc.bits_allocated,
        "bits_stored": desc.bits_stored,
        "pixel_representation": desc.pixel_representation,
        "photometric_interpretation": desc.photometric_interpretation,
        "number_of_frames": 1,
        "transfer_syntax_uid": uids.UID(ts_uid),
        "pixel_keyword": "PixelData",
    }
    if desc.samples_per_pixel > 1:
        opts["planar_configuration"] = desc.planar_configuration
    if desc.pixel_data_vr:
        opts["pixel_vr"] = desc.pixel_data_vr  # 8-bit OW in big endian is word-swapped
    return opts


def decode_frame_with_info(
    frame: bytes, ts_uid: str, desc: PixelDescription, *, as_rgb: bool = True
) -> DecodedFrame:
    """Decode one frame; also report the photometric interpretation of the result.

    With ``as_rgb`` (default) YBR_FULL / YBR_FULL_422 data is converted to RGB, so the
    returned photometric interpretation may differ from ``desc`` (PS3.5 8.2.1: JPEG
    lossy colour is commonly YBR_FULL_422 in the dataset but RGB once decoded).
    Colour output is always interleaved ``(rows, columns, samples)``.
    """
    ts = str(ts_uid)
    if ts not in DECODABLE_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntax(ts, "no decoder available")
    decode_ts = uids.ExplicitVRLittleEndian if ts in _NATIVE_LE else ts
    src: bytes = bytes(frame)
    if ts not in NATIVE_TRANSFER_SYNTAXES:
        src = encapsulate([src])  # the decoders expect encapsulated Pixel Data (PS3.5 A.4)
    elif len(src) < desc.frame_length:
        raise DecodeError(f"native frame has {len(src)} bytes, expected {desc.frame_length}")
    else:
        length = desc.frame_length
        if ts == uids.ExplicitVRBigEndian and desc.pixel_data_vr == "OW":
            length += length % 2  # byte-swapped 16-bit words (PS3.5 7.3)
            src = src.ljust(length, b"\x00")
        src = src[:length]
    try:
        arr, props = get_decoder(decode_ts).as_array(
            src, **_pixel_options(desc, decode_ts), as_rgb=as_rgb
        )
    except UnsupportedTransferSyntax:
        raise
    except Exception as exc:  # codec plugins raise assorted exception types
        log.info("decoding a %s frame failed: %s", uids.UID(ts).name, exc)
        raise DecodeError(f"the {uids.UID(ts).name} data of this frame cannot be decoded "
                          "(corrupt or not what the attributes describe)") from exc
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    photometric = str(props.get("photometric_interpretation", desc.photometric_interpretation))
    return DecodedFrame(pixels=arr, photometric_interpretation=photometric)


def decode_frame(
    frame: bytes, ts_uid: str, desc: PixelDescription, *, as_rgb: bool = True
) -> np.ndarray:
    """Decode one frame to an array shaped ``(rows, cols)`` or ``(rows, cols, samples)``.

    See :func:`decode_frame_with_info` and :data:`DECODABLE_TRANSFER_SYNTAXES`.
    """
    return decode_frame_with_info(frame, ts_uid, desc, as_rgb=as_rgb).pixels


def native_dtype(desc: PixelDescription) -> np.dtype:
    """Little-endian dtype holding one sample in the stored Bits Allocated layout."""
    size = max(desc.bits_allocated, 8) // 8
    kind = "i" if desc.is_signed else "u"
    return np.dtype(f"<{kind}{size}")


def array_to_native_le(arr: np.ndarray, desc: PixelDescription) -> bytes:
    """Pixels as little-endian bytes in the stored layout (PS3.5 8.1.1), samples
    interleaved (Planar Configuration 0); Bits Allocated 1 is bit-packed."""
    if desc.bits_allocated == 1:
        return pack_bits(np.ascontiguousarray(arr, dtype=np.uint8), pad=False)
    return np.ascontiguousarray(arr, dtype=native_dtype(desc)).tobytes()


def frame_to_native_le(frame: bytes, ts_uid: str, desc: PixelDescription) -> tuple[bytes, str]:
    """Decode a frame to native little-endian bytes; returns (bytes, photometric).

    The photometric interpretation is that of the returned bytes (e.g. ``RGB`` for a
    JPEG baseline ``YBR_FULL_422`` frame). Colour samples are interleaved.
    """
    if str(ts_uid) in _NATIVE_LE and desc.photometric_interpretation != "YBR_FULL_422":
        if len(frame) < desc.frame_length:
            raise DecodeError(f"native frame has {len(frame)} bytes, expected {desc.frame_length}")
        if desc.samples_per_pixel == 1 or desc.planar_configuration == 0:
            return bytes(frame[: desc.frame_length]), desc.photometric_interpretation
    decoded = decode_frame_with_info(frame, ts_uid, desc)
    return array_to_native_le(decoded.pixels, desc), decoded.photometric_interpretation


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------
def encode_frame(arr: np.ndarray, ts_uid: str, desc: PixelDescription, **options: Any) -> bytes:
    """Encode one frame (``(rows, cols)`` or interleaved ``(rows, cols, samples)``).

    ``desc`` must describe ``arr`` (its photometric interpretation is the one written;
    YBR_FULL_422 cannot be re-encoded: decode to RGB first). Native syntaxes return the
    little-endian stored layout, unpadded; compressed ones return the codestream (not
    encapsulated). ``options`` go to the pydicom encoder (e.g. ``j2k_cr=[10]``,
    ``jls_error=2``).
    """
    ts = str(ts_uid)
    if ts not in ENCODABLE_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntax(ts, "no encoder available")
    expected = (desc.rows, desc.columns) + ((desc.samples_per_pixel,) if desc.is_color else ())
    if tuple(arr.shape) != expected:
        raise EncodeError(f"array shape {arr.shape} does not match description {expected}")
    if ts not in ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES:
        return array_to_native_le(arr, desc)
    opts = _pixel_options(desc, ts)
    opts.pop("pixel_keyword")
    opts.pop("pixel_vr", None)
    opts["planar_configuration"] = 0
    try:
        return bytes(get_encoder(ts).encode(np.ascontiguousarray(arr), **opts, **options))
    except Exception as exc:
        log.info("encoding a frame as %s failed: %s", uids.UID(ts).name, exc)
        raise EncodeError(f"{uids.UID(ts).name} cannot encode {pixel_format(desc)}") from exc


def pixel_format(desc: PixelDescription) -> str:
    """The pixel format in words, for failure reasons."""
    sign = "signed" if desc.is_signed else "unsigned"
    return (f"{desc.columns} x {desc.rows} {desc.photometric_interpretation} pixels of "
            f"{desc.samples_per_pixel} sample(s), {desc.bits_allocated} bits allocated, "
            f"{desc.bits_stored} stored, {sign}")
