"""What WADO-RS needs from the pixel library: transfer-syntax conversion of instances and
frames, and the rare reads that must parse a file (deflated data, unlocatable frames)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.encaps import generate_frames

from dicomweb.errors import NotAcceptable
from dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_SYNTAXES
from dicomweb.store.repository import InstanceLocation

SWAP_WIDTH = {"OW": 2, "US": 2, "SS": 2, "OF": 4, "FL": 4, "OL": 4, "UL": 4, "SL": 4,
              "OD": 8, "FD": 8, "OV": 8}


def can_transcode(source: str, target: str) -> bool:
    if source == target:
        return True
    try:
        from dicomweb.pixels.transcode import can_transcode as library_can
    except ImportError:
        return source in NATIVE_SYNTAXES and target == EXPLICIT_VR_LITTLE_ENDIAN
    return bool(library_can(source, target))


def can_transcode_frames(source: str, target: str) -> bool:
    return can_transcode(source, target)


def transcode_instance(data: bytes, target: str) -> bytes:
    try:
        from dicomweb.pixels.transcode import transcode_instance as library_transcode
    except ImportError:
        return native_to_explicit_little(data, target)
    try:
        return library_transcode(data, target)
    except ValueError as exc:  # UnsupportedTransferSyntax and decoding failures
        raise NotAcceptable(f"cannot transcode to {target}: {exc}") from exc


def native_to_explicit_little(data: bytes, target: str) -> bytes:
    if target != EXPLICIT_VR_LITTLE_ENDIAN:
        raise NotAcceptable(f"cannot transcode to {target}")
    ds = dcmread(BytesIO(data))
    if ds.file_meta.TransferSyntaxUID not in NATIVE_SYNTAXES:
        raise NotAcceptable(f"cannot decompress {ds.file_meta.TransferSyntaxUID}")
    _ = ds.pixel_array if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.endswith(".2.2") else None
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    out = BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def bits_allocated_of(loc: InstanceLocation) -> int:
    import orjson

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
    """Frames when byte ranges are not indexed or a conversion is needed."""
    try:
        from dicomweb.pixels.transcode import frames_in_syntax
    except ImportError:
        frames_in_syntax = None
    if frames_in_syntax is not None:
        try:
            return frames_in_syntax(data, numbers, target)
        except ValueError as exc:
            raise NotAcceptable(f"cannot produce frames in {target}: {exc}") from exc
    ds = dcmread(BytesIO(data))
    stored = ds.file_meta.TransferSyntaxUID
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if stored.is_compressed:
        if target != stored:
            raise NotAcceptable(f"cannot convert frames from {stored} to {target}")
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [frames[n - 1] for n in numbers]
    if target != EXPLICIT_VR_LITTLE_ENDIAN and target != stored:
        raise NotAcceptable(f"cannot convert frames from {stored} to {target}")
    pixels = ds.pixel_array
    if count == 1:
        pixels = pixels[None, ...]
    little = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
    return [little[n - 1].tobytes() for n in numbers]


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
