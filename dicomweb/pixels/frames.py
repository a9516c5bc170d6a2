"""Frames of stored instances decoded for the pixel endpoints, and library errors as HTTP.

Nothing here parses a DICOM file unless the frame byte ranges were not indexed (deflated
data, 1-bit frames); descriptions come from the stored DICOM JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import orjson

from dicomweb import transcoding
from dicomweb.errors import BadRequest, NotAcceptable, Unprocessable
from dicomweb.store.repository import InstanceLocation, Store

from .codecs import NATIVE_TRANSFER_SYNTAXES, decode_frame_with_info, native_dtype
from .description import PixelDescription
from .errors import DecodeError, NotAVolume, PixelError, RenderError, UnsupportedTransferSyntax
from .mpr import ReformatError


@contextmanager
def pixel_errors() -> Iterator[None]:
    """Library errors as HTTP errors."""
    try:
        yield
    except NotAVolume as exc:
        raise Unprocessable(f"not a volume: {exc.reason}") from None
    except UnsupportedTransferSyntax as exc:
        raise NotAcceptable(f"cannot decode pixel data: {exc}") from None
    except DecodeError as exc:
        raise Unprocessable(f"cannot decode pixel data: {exc}") from None
    except (RenderError, ReformatError) as exc:
        raise BadRequest(str(exc)) from None
    except PixelError as exc:
        raise Unprocessable(str(exc)) from None


def description_with_palette(store: Store, loc: InstanceLocation) -> PixelDescription:
    desc = transcoding.description_of(loc.metadata_json)
    if desc.photometric_interpretation == "PALETTE COLOR" and not desc.has_palette_data:
        bulk = orjson.loads(loc.bulk_json) if loc.bulk_json else {}
        tags = ("00281201", "00281202", "00281203")
        if all(tag in bulk for tag in tags):
            data = []
            for tag in tags:
                offset, length, vr = bulk[tag]
                value = store.blobs.read_ranges(loc.blob_key, [[offset, length]])
                if loc.transfer_syntax_uid == "1.2.840.10008.1.2.2":
                    value = transcoding.swap_bulk_to_little_endian(value, vr)
                data.append(value)
            desc = desc.with_palette_data(*data)
    return desc


def fast_native(data: bytes, ts: str, desc: PixelDescription) -> np.ndarray | None:
    """Native little-endian grayscale frames straight from their bytes (no codec)."""
    if (ts not in NATIVE_TRANSFER_SYNTAXES or ts == "1.2.840.10008.1.2.2"
            or desc.samples_per_pixel != 1 or desc.bits_allocated not in (8, 16, 32)
            or len(data) < desc.frame_length):
        return None
    arr = np.frombuffer(data, native_dtype(desc), count=desc.rows * desc.columns)
    arr = arr.reshape(desc.rows, desc.columns)
    unused = desc.bits_allocated - desc.bits_stored
    if 0 < unused < desc.bits_allocated:
        if desc.is_signed:  # sign-extend from Bits Stored (PS3.5 8.1.1)
            arr = (arr << unused) >> unused
        else:
            arr = arr & np.array((1 << desc.bits_stored) - 1, dtype=arr.dtype)
    return arr


def decoded_frame(
    store: Store, loc: InstanceLocation, number: int, desc: PixelDescription
) -> tuple[np.ndarray, str]:
    """Frame ``number`` (1-based) decoded, with the photometric interpretation it has now."""
    ranges = loc.frames
    if ranges is not None:
        data = store.blobs.read_ranges(loc.blob_key, ranges[number - 1])
        fast = fast_native(data, loc.transfer_syntax_uid, desc)
        if fast is not None:
            return fast, desc.photometric_interpretation
        decoded = decode_frame_with_info(data, loc.transfer_syntax_uid, desc)
        return decoded.pixels, decoded.photometric_interpretation
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    try:  # a full parse: deflated data sets are inflated by dcmread only
        dataset = dcmread(store.blobs.path(loc.blob_key))
        arr = pixel_array(dataset, index=number - 1)
    except Exception as exc:  # pydicom and its plugins raise assorted exception types
        raise DecodeError(str(exc)) from exc
    photometric = desc.photometric_interpretation
    if desc.samples_per_pixel == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pixel_array converts YBR to RGB
    return arr, photometric
