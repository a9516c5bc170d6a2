"""What WADO-RS needs from the pixel library: transfer-syntax conversion of instances and
frames, and the rare reads that must parse a file (deflated data, unlocatable frames)."""

from __future__ import annotations

import dataclasses
from io import BytesIO

import numpy as np
import orjson
from pydicom import dcmread
from pydicom.encaps import generate_frames

from dicomweb.errors import NotAcceptable
from dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb.pixels.codecs import (
    DECODABLE_TRANSFER_SYNTAXES,
    ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES,
    array_to_native_le,
    decode_frame_with_info,
    encode_frame,
    frame_to_native_le,
)
from dicomweb.pixels.description import PixelDescription
from dicomweb.pixels.errors import PixelError
from dicomweb.pixels.transcode import (
    DEFAULT_J2K_COMPRESSION_RATIO,
    DEFAULT_JLS_ERROR,
)
from dicomweb.pixels.transcode import can_transcode as library_can_transcode
from dicomweb.pixels.transcode import transcode_instance as library_transcode_instance
from dicomweb.store.repository import InstanceLocation

SWAP_WIDTH = {
    "OW": 2,
    "US": 2,
    "SS": 2,
    "OF": 4,
    "FL": 4,
    "OL": 4,
    "UL": 4,
    "SL": 4,
    "OD": 8,
    "FD": 8,
    "OV": 8,
}


def can_transcode(source: str, target: str) -> bool:
    return source == target or bool(library_can_transcode(source, target))


def can_transcode_frames(source: str, target: str) -> bool:
    """True when frames stored in `source` can be sent in `target`: as stored, decoded to
    native little endian, or decoded and re-encoded with an installed encoder (RLE, JPEG-LS,
    JPEG 2000). Whether a particular image fits the target's profile (e.g. JPEG-LS of 32-bit
    samples) is only known when encoding; that failure is a 406 too."""
    if source == target:
        return True
    if source not in DECODABLE_TRANSFER_SYNTAXES:
        return False
    return target in FRAME_NATIVE_TARGETS or target in ENCODABLE_COMPRESSED_TRANSFER_SYNTAXES


#: Native syntaxes a frame can be sent in: the little-endian frame bytes are the same.
FRAME_NATIVE_TARGETS = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2"})


def description_of(metadata_json: bytes | None) -> PixelDescription:
    """The pixel description of an instance from its stored DICOM JSON (no file parsing)."""
    return PixelDescription.from_dicom_json(orjson.loads(metadata_json) if metadata_json else {})


def convert_frames(
    frames: list[bytes], numbers: list[int], source: str, target: str, desc: PixelDescription
) -> list[bytes]:
    """Stored frame bytes (`numbers` are their 1-based frame numbers) in `target`: native
    little endian (decoded; YBR colour becomes RGB as pydicom decodes it) or re-encoded
    (RLE, JPEG-LS, JPEG 2000; lossy targets with the library's default settings)."""
    if source == target:
        return frames
    out: list[bytes] = []
    try:
        for frame, number in zip(frames, numbers, strict=True):
            frame_desc = desc.for_frame(number - 1)
            if target in FRAME_NATIVE_TARGETS:
                out.append(frame_to_native_le(frame, source, frame_desc)[0])
                continue
            decoded = decode_frame_with_info(frame, source, frame_desc)
            encode_desc = dataclasses.replace(
                frame_desc,
                photometric_interpretation=decoded.photometric_interpretation,
                planar_configuration=0,
            )
            options: dict[str, object] = {}
            if target == "1.2.840.10008.1.2.4.91":
                options["j2k_cr"] = [DEFAULT_J2K_COMPRESSION_RATIO]
            if target == "1.2.840.10008.1.2.4.81":
                options["jls_error"] = DEFAULT_JLS_ERROR
            out.append(encode_frame(decoded.pixels, target, encode_desc, **options))
    except (PixelError, ValueError) as exc:
        raise NotAcceptable(f"cannot convert frames from {source} to {target}: {exc}") from exc
    return out


def transcode_instance(data: bytes, target: str) -> bytes:
    try:
        return library_transcode_instance(data, target)
    except ValueError as exc:  # UnsupportedTransferSyntax and decoding failures
        raise NotAcceptable(f"cannot transcode to {target}: {exc}") from exc


def bits_allocated_of(loc: InstanceLocation) -> int:
    metadata = orjson.loads(loc.metadata_json) if loc.metadata_json else {}
    value = metadata.get("00280100", {}).get("Value", [16])
    return int(value[0]) if value else 16


def swap_to_little_endian(frame: bytes, bits_allocated: int) -> bytes:
    width = {16: 2, 32: 4, 64: 8}.get(bits_allocated)
    if not width:
        return frame
    return np.frombuffer(frame, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def swap_bulk_to_little_endian(data: bytes, vr: str) -> bytes:
    width = SWAP_WIDTH.get(vr)
    if not width or len(data) % width:
        return data
    return np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def frames_from_file(data: bytes, numbers: list[int], target: str) -> list[bytes]:
    """Frames by parsing the file: only when byte ranges are not indexed (deflated data,
    bit-packed 1-bit frames that do not start on a byte)."""
    ds = dcmread(BytesIO(data))
    stored = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if missing := [n for n in numbers if n > count]:
        raise NotAcceptable(f"the instance has {count} frame(s); no frame {missing[0]}")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        wanted = [frames[n - 1] for n in numbers]
        if target == stored:
            return wanted
        if not can_transcode_frames(stored, target):
            raise NotAcceptable(f"cannot convert frames from {stored} to {target}")
        return convert_frames(wanted, numbers, stored, target, PixelDescription.from_dataset(ds))
    if target != stored and not can_transcode_frames(EXPLICIT_VR_LITTLE_ENDIAN, target):
        raise NotAcceptable(f"cannot convert frames from {stored} to {target}")
    pixels = ds.pixel_array  # inflated, byte-swapped and bit-unpacked by pydicom
    if count == 1:
        pixels = pixels[None, ...]
    desc = PixelDescription.from_dataset(ds)
    # pydicom returns YBR native data unconverted; the bytes keep their photometric.
    native = [array_to_native_le(pixels[n - 1], desc) for n in numbers]
    if target in FRAME_NATIVE_TARGETS or target == stored:
        return native
    return convert_frames(native, numbers, EXPLICIT_VR_LITTLE_ENDIAN, target, desc)


def bulk_from_file(data: bytes, path: str) -> bytes | None:
    """Value of the bulk element at `path` (tags and item numbers) by parsing the file."""
    ds = dcmread(BytesIO(data))
    parts = path.split("/")
    current = ds
    try:
        while len(parts) > 1:
            sequence = current[int(parts[0], 16)].value
            current = sequence[int(parts[1]) - 1]
            parts = parts[2:]
        value = current[int(parts[0], 16)].value
    except (KeyError, IndexError, ValueError):
        return None
    return bytes(value) if isinstance(value, bytes | bytearray) else None
