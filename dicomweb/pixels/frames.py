"""Frames of stored instances decoded for the pixel endpoints, and library errors as HTTP.

Nothing here parses a DICOM file unless the frame byte ranges were not indexed (deflated
data, 1-bit frames); descriptions come from the stored DICOM JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydicom import dcmread
from pydicom.pixels import pixel_array

from dicomweb import transcoding
from dicomweb.errors import (
    BadRequest,
    NotAcceptable,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from dicomweb.negotiation import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb.sources import big_endian_frame
from dicomweb.store.repository import InstanceLocation, Store

from .budget import BudgetBusy, MemoryBudget
from .codecs import NATIVE_TRANSFER_SYNTAXES, decode_frame_with_info, native_dtype
from .description import PixelDescription
from .errors import DecodeError, NotAVolume, PixelError, RenderError, UnsupportedTransferSyntax
from .limits import DecodeLimitExceeded, check_frame, check_total
from .mpr import ReformatError

log = logging.getLogger("dicomweb.pixels")


@dataclass(frozen=True)
class PixelLimits:
    """What one request may decode, and the memory budget all pixel work shares."""

    max_decoded_bytes: int
    budget: MemoryBudget

    @classmethod
    def of(cls, app_state: Any) -> PixelLimits:
        return cls(app_state.settings.max_decoded_bytes, app_state.pixel_budget)


@contextmanager
def pixel_errors() -> Iterator[None]:
    """Library errors as HTTP errors."""
    try:
        yield
    except FileNotFoundError:  # deleted since it was located
        raise NotFound("the instance has just been deleted") from None
    except BudgetBusy as exc:
        raise ServiceUnavailable(str(exc), retry_after_s=exc.retry_after_s) from None
    except NotAVolume as exc:
        raise Unprocessable(f"not a volume: {exc.reason}") from None
    except UnsupportedTransferSyntax as exc:
        raise NotAcceptable(f"cannot decode pixel data: {exc}") from None
    except DecodeLimitExceeded as exc:
        raise Unprocessable(str(exc)) from None
    except DecodeError as exc:
        raise Unprocessable(f"cannot decode pixel data: {exc}") from None
    except (RenderError, ReformatError) as exc:
        raise BadRequest(str(exc)) from None
    except PixelError as exc:
        raise Unprocessable(str(exc)) from None


PALETTE_TAGS = ("00281201", "00281202", "00281203")
SEGMENTED_PALETTE_TAGS = ("00281221", "00281222", "00281223")


def description_with_palette(store: Store, loc: InstanceLocation) -> PixelDescription:
    """The pixel description with the Palette Color LUT data (PS3.3 C.7.6.3.1.5) in little
    endian: read from the file when it was bulk data, swapped when the file is big endian."""
    desc = transcoding.description_of(loc.metadata_json)
    if desc.photometric_interpretation != "PALETTE COLOR":
        return desc
    luts = (desc.red_palette, desc.green_palette, desc.blue_palette)
    if any(lut is None for lut in luts):
        return desc
    big_endian = loc.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
    if desc.has_palette_data and not big_endian:
        return desc
    bulk = orjson.loads(loc.bulk_json) if loc.bulk_json else {}
    data = []
    for lut, plain, segmented in zip(luts, PALETTE_TAGS, SEGMENTED_PALETTE_TAGS, strict=True):
        tag = segmented if lut.segmented else plain  # type: ignore[union-attr]
        if lut.data is not None:  # type: ignore[union-attr]
            # Inline values of the stored DICOM JSON keep the file's byte order.
            value = transcoding.swap_bulk_to_little_endian(lut.data, "OW")  # type: ignore[union-attr]
            data.append(value)
            continue
        if tag not in bulk:
            return desc
        offset, length, vr = bulk[tag]
        value = store.blobs.read_ranges(loc.blob_key, [[offset, length]])
        if big_endian:
            value = transcoding.swap_bulk_to_little_endian(value, vr)
        data.append(value)
    return desc.with_palette_data(*data)


def fast_native(data: bytes, ts: str, desc: PixelDescription) -> np.ndarray | None:
    """Native little-endian grayscale frames straight from their bytes (no codec)."""
    if (ts not in NATIVE_TRANSFER_SYNTAXES or ts == EXPLICIT_VR_BIG_ENDIAN
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
    store: Store, loc: InstanceLocation, number: int, desc: PixelDescription, max_bytes: int
) -> tuple[np.ndarray, str]:
    """Frame ``number`` (1-based) decoded, with the photometric interpretation it has now;
    :class:`DecodeLimitExceeded` before decoding when it would take more than ``max_bytes``."""
    ranges = loc.frames
    if ranges is not None:
        ts = loc.transfer_syntax_uid
        if ts == EXPLICIT_VR_BIG_ENDIAN:  # made little endian first, as /frames sends it
            check_frame(b"", ts, desc, max_bytes)
            with store.blobs.path(loc.blob_key).open("rb", buffering=0) as fp:
                data = big_endian_frame(fp, ranges[number - 1], ranges[0][0][0], desc)
            ts = EXPLICIT_VR_LITTLE_ENDIAN
        else:
            data = store.blobs.read_ranges(loc.blob_key, ranges[number - 1])
        check_frame(data, ts, desc, max_bytes)
        fast = fast_native(data, ts, desc)
        if fast is not None:
            return fast, desc.photometric_interpretation
        decoded = decode_frame_with_info(data, ts, desc)
        return decoded.pixels, decoded.photometric_interpretation
    check_frame(b"", EXPLICIT_VR_LITTLE_ENDIAN, desc, max_bytes)
    path = store.blobs.path(loc.blob_key)
    check_total(path.stat().st_size, max_bytes, "the stored file (parsed whole)")
    try:  # a full parse: deflated data sets are inflated by dcmread only
        dataset = dcmread(path)
        arr = pixel_array(dataset, index=number - 1)
    except Exception as exc:  # pydicom and its plugins raise assorted exception types
        log.warning("frame %d of %s: %s", number, loc.sop_instance_uid, exc)
        raise DecodeError("the pixel data of this instance cannot be decoded") from exc
    photometric = desc.photometric_interpretation
    if desc.samples_per_pixel == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pixel_array converts YBR to RGB
    return arr, photometric
