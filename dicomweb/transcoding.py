"""What WADO-RS needs from the pixel library: transfer-syntax conversion of instances and
frames, and the rare reads that must parse a file (deflated data, unlocatable frames)."""

from __future__ import annotations

import dataclasses
import logging
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
from dicomweb.pixels.limits import (
    DecodeLimitExceeded,
    attribute_frame_bytes,
    check_frame,
    check_total,
)
from dicomweb.pixels.transcode import (
    DEFAULT_J2K_COMPRESSION_RATIO,
    DEFAULT_JLS_ERROR,
)
from dicomweb.pixels.transcode import can_transcode as library_can_transcode
from dicomweb.pixels.transcode import transcode_instance as library_transcode_instance

log = logging.getLogger(__name__)

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
    frames: list[bytes], numbers: list[int], source: str, target: str, desc: PixelDescription,
    max_bytes: int,
) -> list[bytes]:
    """Stored frame bytes (`numbers` are their 1-based frame numbers) in `target`: native
    little endian (decoded; YBR colour becomes RGB as pydicom decodes it) or re-encoded
    (RLE, JPEG-LS, JPEG 2000; lossy targets with the library's default settings). Each
    frame is checked against `max_bytes` before it is decoded; a repeated number is
    converted once."""
    if source == target:
        return frames
    out: list[bytes] = []
    done: dict[int, bytes] = {}
    try:
        for frame, number in zip(frames, numbers, strict=True):
            if number in done:
                out.append(done[number])
                continue
            frame_desc = desc.for_frame(number - 1)
            check_frame(frame, source, frame_desc, max_bytes)
            if target in FRAME_NATIVE_TARGETS:
                out.append(frame_to_native_le(frame, source, frame_desc)[0])
                done[number] = out[-1]
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
            done[number] = out[-1]
    except PixelError as exc:  # worded by the pixel library
        raise NotAcceptable(f"cannot convert frames from {source} to {target}: {exc}") from exc
    except ValueError as exc:  # a library's own text: to the log, not to the client
        log.info("frame conversion %s -> %s failed: %r", source, target, exc)
        raise NotAcceptable(f"cannot convert frames from {source} to {target}: the frame "
                            "does not match what its attributes describe") from exc
    return out


def transcode_instance(data: bytes, target: str, max_bytes: int) -> bytes:
    try:
        return library_transcode_instance(data, target, max_decoded_bytes=max_bytes)
    except PixelError as exc:  # UnsupportedTransferSyntax, limits and decoding failures
        raise NotAcceptable(f"cannot transcode to {target}: {exc}") from exc
    except ValueError as exc:
        log.info("transcoding to %s failed: %r", target, exc)
        raise NotAcceptable(f"cannot transcode to {target}: the instance's pixel data does "
                            "not match what its attributes describe") from exc


#: Memory a whole-instance transcode holds, per byte of the file (its bytes, the parsed
#: dataset, the written copy) and per byte of decoded pixels (the frames and their encoding).
TRANSCODE_FILE_FACTOR = 3
TRANSCODE_PIXEL_FACTOR = 3


def transcode_cost(file_bytes: int, metadata_json: bytes | None) -> int:
    desc = description_of(metadata_json)
    pixels = attribute_frame_bytes(desc) * desc.number_of_frames
    return file_bytes * TRANSCODE_FILE_FACTOR + pixels * TRANSCODE_PIXEL_FACTOR


def frames_cost(count: int, desc: PixelDescription) -> int:
    """Converted frames are held until sent: each, plus one decode at a time."""
    frame = attribute_frame_bytes(desc)
    return count * frame * 2 + frame * 4


def swap_frame_to_little_endian(frame: bytes, desc: PixelDescription) -> bytes:
    """Explicit VR Big Endian frame bytes as little endian. The byte order of a sample
    follows Bits Allocated (PS3.5 8.1.1, 8.2): 16-, 32- and 64-bit samples are swapped
    whole; 1- and 8-bit samples are bytes and keep their order, except in an OW value,
    whose 16-bit words are swapped (PS3.5 7.3). ``frame`` starts on a word boundary."""
    if desc.bits_allocated > 8:
        width = desc.bits_allocated // 8
    elif desc.pixel_data_vr == "OW":
        width = 2
    else:
        return frame
    usable = len(frame) - len(frame) % width
    words = np.frombuffer(frame, dtype=f">u{width}", count=usable // width)
    return words.astype(f"<u{width}").tobytes() + frame[usable:]


def swap_bulk_to_little_endian(data: bytes, vr: str) -> bytes:
    width = SWAP_WIDTH.get(vr)
    if not width or len(data) % width:
        return data
    return np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def frames_from_file(data: bytes, numbers: list[int], target: str, max_bytes: int
                     ) -> list[bytes]:
    """Frames by parsing the file: only when byte ranges are not indexed (deflated data,
    bit-packed 1-bit frames that do not start on a byte). All frames are decoded at once,
    so their sum is checked against `max_bytes` first."""
    ds = dcmread(BytesIO(data))
    all_frames = attribute_frame_bytes(PixelDescription.from_dataset(ds))
    all_frames *= int(ds.get("NumberOfFrames", 1) or 1)
    try:
        check_total(all_frames, max_bytes, "the instance's pixel data")
    except DecodeLimitExceeded as exc:
        raise NotAcceptable(str(exc)) from None
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
        return convert_frames(wanted, numbers, stored, target, PixelDescription.from_dataset(ds),
                              max_bytes)
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
    return convert_frames(native, numbers, EXPLICIT_VR_LITTLE_ENDIAN, target, desc, max_bytes)


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
