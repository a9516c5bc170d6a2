"""Decoded sizes known before decoding: from the Image Pixel attributes and from the header of
each frame's codestream, so a frame that claims more than the limit is refused before any
decoder allocates for it.

The codestream is what a decoder believes, not the attributes: a 2 KB JPEG whose SOF says
65535 x 65535 makes libjpeg allocate 4 GiB per component whatever Rows and Columns say.

* JPEG (ISO 10918-1 B.2.2): the frame header SOFn gives P, Y, X and Nf.
* JPEG-LS (ISO 14495-1 C.2.2): SOF55 (0xFFF7) has the same layout.
* JPEG 2000 and HTJ2K (ISO 15444-1 A.5.1): the SIZ segment after SOC gives Xsiz - XOsiz,
  Ysiz - YOsiz, Csiz and each component's Ssiz; a JP2 file wraps it in a ``jp2c`` box.
* RLE (PS3.5 G.3.1): the 64-byte header gives the number of segments (at most 15), one per
  byte plane of Rows x Columns bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom import uid as uids

from .description import PixelDescription
from .errors import DecodeError

JPEG_SYNTAXES = frozenset({uids.JPEGBaseline8Bit, uids.JPEGExtended12Bit, uids.JPEGLossless,
                           uids.JPEGLosslessSV1})
JPEG_LS_SYNTAXES = frozenset({uids.JPEGLSLossless, uids.JPEGLSNearLossless})
J2K_SYNTAXES = frozenset({uids.JPEG2000Lossless, uids.JPEG2000, uids.JPEG2000MCLossless,
                          uids.JPEG2000MC, uids.HTJ2KLossless, uids.HTJ2KLosslessRPCL,
                          uids.HTJ2K})
#: JPEG frame header markers: SOF0-3, 5-7, 9-11, 13-15 (0xC4 DHT, 0xC8 JPG, 0xCC DAC are not).
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                         0xCE, 0xCF, 0xF7})
#: Markers that stand alone (no length): TEM, RSTm, SOI, EOI.
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
HEADER_SCAN_BYTES = 1 << 16


class DecodeLimitExceeded(DecodeError):
    """A frame (or the data of a request) would decode to more than the limit allows."""


@dataclass(frozen=True)
class CodestreamShape:
    """What a codestream header says the decoder will produce."""

    rows: int
    columns: int
    components: int
    bits: int

    @property
    def decoded_bytes(self) -> int:
        return self.rows * self.columns * self.components * sample_bytes(self.bits)


def sample_bytes(bits: int) -> int:
    """Bytes a decoder gives one sample of ``bits`` bits (8, 16 or 32-bit arrays)."""
    return 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8


def attribute_frame_bytes(desc: PixelDescription) -> int:
    """Decoded bytes of one frame according to Rows, Columns, Samples and Bits Allocated."""
    return desc.rows * desc.columns * desc.samples_per_pixel * sample_bytes(desc.bits_allocated)


def codestream_shape(frame: bytes, ts_uid: str, desc: PixelDescription) -> CodestreamShape | None:
    """The shape the frame's codestream header declares; None for native data or a header
    that cannot be found (the decoder then fails on it by itself)."""
    ts = str(ts_uid)
    head = bytes(frame[:HEADER_SCAN_BYTES])
    if ts in JPEG_SYNTAXES or ts in JPEG_LS_SYNTAXES:
        return jpeg_shape(head)
    if ts in J2K_SYNTAXES:
        return j2k_shape(head)
    if ts == uids.RLELossless:
        return rle_shape(head, desc)
    return None


def jpeg_shape(data: bytes) -> CodestreamShape | None:
    """The first SOFn / SOF55 frame header of a JPEG or JPEG-LS codestream."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in SOF_MARKERS:
            if pos + 10 > len(data):
                return None
            precision, rows, columns, components = struct.unpack_from(">BHHB", data, pos + 4)
            return CodestreamShape(rows, columns, components, precision)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def j2k_shape(data: bytes) -> CodestreamShape | None:
    """The SIZ segment of a JPEG 2000 codestream (or of the jp2c box of a JP2 file)."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0:
        return None
    siz = start + 4
    if siz + 38 > len(data):
        return None
    _, _, xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">HHIIII", data, siz)
    (components,) = struct.unpack_from(">H", data, siz + 36)
    bits = 1
    for index in range(min(components, 16384)):
        at = siz + 38 + 3 * index
        if at >= len(data):
            break
        bits = max(bits, (data[at] & 0x7F) + 1)
    return CodestreamShape(max(ysiz - yosiz, 0), max(xsiz - xosiz, 0), components, bits)


def rle_shape(data: bytes, desc: PixelDescription) -> CodestreamShape | None:
    """RLE decodes Rows x Columns bytes per segment: the segment count is the claim."""
    if len(data) < 64:
        return None
    (segments,) = struct.unpack_from("<I", data, 0)
    return CodestreamShape(desc.rows, desc.columns, segments, 8)


def check_frame(frame: bytes, ts_uid: str, desc: PixelDescription, max_bytes: int) -> int:
    """Raise :class:`DecodeLimitExceeded` unless the frame decodes within ``max_bytes``, by
    the attributes and by the codestream; returns the decoded size the check allowed."""
    claimed = attribute_frame_bytes(desc)
    if claimed > max_bytes:
        raise DecodeLimitExceeded(
            f"the image is {desc.columns} x {desc.rows} pixels of {desc.samples_per_pixel} "
            f"sample(s) at {desc.bits_allocated} bits, {claimed} bytes decoded, more than the "
            f"server's limit of {max_bytes} bytes (DICOMWEB_MAX_DECODED_BYTES)")
    shape = codestream_shape(frame, ts_uid, desc)
    if shape is None:
        return claimed
    if shape.decoded_bytes > max_bytes:
        raise DecodeLimitExceeded(
            f"the frame's codestream declares {shape.columns} x {shape.rows} pixels of "
            f"{shape.components} component(s) at {shape.bits} bits ({shape.decoded_bytes} bytes "
            f"decoded; the attributes say {desc.columns} x {desc.rows}), more than the server's "
            f"limit of {max_bytes} bytes (DICOMWEB_MAX_DECODED_BYTES)")
    return max(claimed, shape.decoded_bytes)


def check_total(total: int, max_bytes: int, what: str) -> None:
    if total > max_bytes:
        raise DecodeLimitExceeded(
            f"{what} decodes to {total} bytes, more than the server's limit of {max_bytes} "
            "bytes (DICOMWEB_MAX_DECODED_BYTES)")
