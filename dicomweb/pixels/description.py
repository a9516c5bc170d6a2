"""Pixel description: the Image Pixel module (PS3.3 C.7.6.3) and related attributes
needed to decode, render and reformat frames without parsing the DICOM file.

Built either from the stored DICOM JSON (PS3.18 Annex F) or from a pydicom Dataset.
Every optional attribute may be missing: constructors never raise on absent or
malformed optional values, they leave the field ``None``.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.datadict import tag_for_keyword

from .palette import expand_segmented_lut

Vector3 = tuple[float, float, float]
Orientation6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class PaletteLUT:
    """One Palette Color LUT channel (PS3.3 C.7.6.3.1.5 / C.7.6.3.1.6).

    ``descriptor`` is (number of entries, first mapped value, bits per entry); 0 entries
    means 65536. ``data`` holds the little-endian LUT Data bytes, or ``None`` when the
    value was not inline (``bulk_data_uri`` then says where to fetch it).
    """

    descriptor: tuple[int, int, int]
    data: bytes | None = None
    bulk_data_uri: str | None = None
    #: ``data`` (or the bulk data) is Segmented Palette Color LUT Data (PS3.3 C.7.9), made a
    #: plain LUT by :meth:`with_data`.
    segmented: bool = False

    def with_data(self, data: bytes) -> PaletteLUT:
        """This LUT with its little-endian data (segmented data expanded)."""
        if self.segmented:
            data = expand_segmented_lut(data, self.bits, self.entries)
        return dataclasses.replace(self, data=bytes(data), segmented=False)

    @property
    def entries(self) -> int:
        return self.descriptor[0] or 65536

    @property
    def first_mapped(self) -> int:
        return self.descriptor[1]

    @property
    def bits(self) -> int:
        return self.descriptor[2]


@dataclass(frozen=True)
class FrameInfo:
    """Per-frame values of an enhanced multi-frame object (PS3.3 C.7.6.16).

    Values come from the Per-Frame Functional Groups Sequence, falling back to the
    Shared Functional Groups Sequence; absent ones are ``None``.
    """

    image_position_patient: Vector3 | None = None
    image_orientation_patient: Orientation6 | None = None
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_centers: tuple[float, ...] = ()
    window_widths: tuple[float, ...] = ()


@dataclass(frozen=True)
class PixelDescription:
    """Everything about a frame's pixels that codecs, rendering and MPR need."""

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    high_bit: int = 15
    pixel_representation: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    planar_configuration: int = 0
    number_of_frames: int = 1
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    rescale_type: str | None = None
    window_centers: tuple[float, ...] = ()
    window_widths: tuple[float, ...] = ()
    voi_lut_function: str | None = None
    pixel_padding_value: int | None = None
    red_palette: PaletteLUT | None = None
    green_palette: PaletteLUT | None = None
    blue_palette: PaletteLUT | None = None
    pixel_spacing: tuple[float, float] | None = None
    image_position_patient: Vector3 | None = None
    image_orientation_patient: Orientation6 | None = None
    frame_of_reference_uid: str | None = None
    slice_thickness: float | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    pixel_data_vr: str | None = None
    frames: tuple[FrameInfo, ...] = ()

    # -- derived helpers -------------------------------------------------------------
    @property
    def is_signed(self) -> bool:
        return self.pixel_representation == 1

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel > 1

    @property
    def has_palette_data(self) -> bool:
        channels = (self.red_palette, self.green_palette, self.blue_palette)
        return all(c is not None and c.data is not None for c in channels)

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (bit-packed for Bits Allocated 1, PS3.5 8.1.1)."""
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        if self.photometric_interpretation == "YBR_FULL_422":
            bits = bits * 2 // 3  # two Y per Cb/Cr pair (PS3.3 C.7.6.3.1.2)
        return (bits + 7) // 8

    def frame_info(self, index: int) -> FrameInfo:
        """Per-frame values for the 0-based frame ``index``, merged with the top level."""
        info = self.frames[index] if 0 <= index < len(self.frames) else FrameInfo()
        return FrameInfo(
            image_position_patient=info.image_position_patient or self.image_position_patient,
            image_orientation_patient=info.image_orientation_patient
            or self.image_orientation_patient,
            pixel_spacing=info.pixel_spacing or self.pixel_spacing,
            slice_thickness=_first_not_none(info.slice_thickness, self.slice_thickness),
            rescale_slope=_first_not_none(info.rescale_slope, self.rescale_slope),
            rescale_intercept=_first_not_none(info.rescale_intercept, self.rescale_intercept),
            window_centers=info.window_centers or self.window_centers,
            window_widths=info.window_widths or self.window_widths,
        )

    def for_frame(self, index: int) -> PixelDescription:
        """A single-frame description with the per-frame values of ``index`` applied."""
        info = self.frame_info(index)
        return dataclasses.replace(
            self,
            number_of_frames=1,
            image_position_patient=info.image_position_patient,
            image_orientation_patient=info.image_orientation_patient,
            pixel_spacing=info.pixel_spacing,
            slice_thickness=info.slice_thickness,
            rescale_slope=info.rescale_slope,
            rescale_intercept=info.rescale_intercept,
            window_centers=info.window_centers,
            window_widths=info.window_widths,
            frames=(),
        )

    def with_palette_data(self, red: bytes, green: bytes, blue: bytes) -> PixelDescription:
        """Return a copy with Palette LUT Data filled in (e.g. after fetching bulk data)."""

        def fill(lut: PaletteLUT | None, data: bytes) -> PaletteLUT | None:
            return None if lut is None else lut.with_data(data)

        return dataclasses.replace(
            self,
            red_palette=fill(self.red_palette, red),
            green_palette=fill(self.green_palette, green),
            blue_palette=fill(self.blue_palette, blue),
        )

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_dicom_json(cls, d: dict[str, Any]) -> PixelDescription:
        """Build from a PS3.18 Annex F DICOM JSON object (``{"00280010": {...}}``)."""
        return _build(_JsonSource(d))

    @classmethod
    def from_dataset(cls, ds: Any) -> PixelDescription:
        """Build from a :class:`pydicom.dataset.Dataset`."""
        return _build(_DatasetSource(ds))


# ---------------------------------------------------------------------------------------
# Attribute sources: one interface over DICOM JSON and pydicom datasets.
# ---------------------------------------------------------------------------------------
class _Source(Protocol):
    def values(self, keyword: str) -> list[Any]: ...

    def items(self, keyword: str) -> list[_Source]: ...

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]: ...

    def vr(self, keyword: str) -> str | None: ...


def json_key(keyword: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a pydicom keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


class _JsonSource:
    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d if isinstance(d, dict) else {}

    def _element(self, keyword: str) -> dict[str, Any]:
        elem = self._d.get(json_key(keyword))
        return elem if isinstance(elem, dict) else {}

    def vr(self, keyword: str) -> str | None:
        vr = self._element(keyword).get("vr")
        return vr if isinstance(vr, str) else None

    def values(self, keyword: str) -> list[Any]:
        value = self._element(keyword).get("Value")
        return list(value) if isinstance(value, list) else []

    def items(self, keyword: str) -> list[_Source]:
        return [_JsonSource(item) for item in self.values(keyword) if isinstance(item, dict)]

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]:
        elem = self._element(keyword)
        inline = elem.get("InlineBinary")
        if isinstance(inline, str):
            try:
                return base64.b64decode(inline), None
            except ValueError:
                return None, None
        uri = elem.get("BulkDataURI")
        return None, uri if isinstance(uri, str) else None


class _DatasetSource:
    def __init__(self, ds: Any) -> None:
        self._ds = ds

    def _value(self, keyword: str) -> Any:
        try:
            return getattr(self._ds, keyword, None)
        except Exception:  # malformed raw element: treat as absent
            return None

    def vr(self, keyword: str) -> str | None:
        try:
            return str(self._ds[keyword].VR) if keyword in self._ds else None
        except Exception:
            return None

    def values(self, keyword: str) -> list[Any]:
        value = self._value(keyword)
        if value is None or value == "":
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return [value]
        return list(value)

    def items(self, keyword: str) -> list[_Source]:
        value = self._value(keyword)
        if value is None or isinstance(value, (str, bytes)):
            return []
        try:
            return [_DatasetSource(item) for item in value]
        except TypeError:
            return []

    def binary(self, keyword: str) -> tuple[bytes | None, str | None]:
        value = self._value(keyword)
        if not isinstance(value, (bytes, bytearray)):
            return None, None
        data = bytes(value)
        encoding = getattr(self._ds, "original_encoding", (None, True))
        if encoding and encoding[1] is False and len(data) % 2 == 0:
            data = bytes(_swap16(data))  # OW words of a big endian file
        return data, None


def _swap16(data: bytes) -> bytearray:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return out


# ---------------------------------------------------------------------------------------
# Value coercion: never raise on malformed optional values.
# ---------------------------------------------------------------------------------------
def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _floats(values: Sequence[Any]) -> tuple[float, ...] | None:
    out = tuple(_float(v) for v in values)
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def _first_int(src: _Source, keyword: str, default: int | None = None) -> int | None:
    values = src.values(keyword)
    return _int(values[0]) if values else default


def _first_float(src: _Source, keyword: str) -> float | None:
    values = src.values(keyword)
    return _float(values[0]) if values else None


def _first_str(src: _Source, keyword: str) -> str | None:
    values = src.values(keyword)
    if not values or values[0] is None:
        return None
    text = str(values[0]).strip()
    return text or None


def _vector(src: _Source, keyword: str, n: int) -> tuple[float, ...] | None:
    values = _floats(src.values(keyword))
    return values if values is not None and len(values) == n else None


def _palette(src: _Source, color: str) -> PaletteLUT | None:
    descriptor = [_int(v) for v in src.values(f"{color}PaletteColorLookupTableDescriptor")]
    if len(descriptor) != 3 or any(v is None for v in descriptor):
        return None
    data, uri = src.binary(f"{color}PaletteColorLookupTableData")
    lut = PaletteLUT(descriptor=tuple(descriptor), data=data, bulk_data_uri=uri)  # type: ignore[arg-type]
    if data is None and uri is None:
        data, uri = src.binary(f"Segmented{color}PaletteColorLookupTableData")
        lut = dataclasses.replace(lut, bulk_data_uri=uri, segmented=True)
        if data is not None:
            lut = lut.with_data(data)
    return lut


def _frame_info(groups: Sequence[_Source]) -> FrameInfo:
    """Merge functional group macros (PS3.3 C.7.6.16.2), earlier groups win."""
    position = orientation = spacing = None
    thickness = slope = intercept = None
    centers: tuple[float, ...] = ()
    widths: tuple[float, ...] = ()
    for group in groups:
        for item in group.items("PlanePositionSequence")[:1]:
            position = position or _vector(item, "ImagePositionPatient", 3)
        for item in group.items("PlaneOrientationSequence")[:1]:
            orientation = orientation or _vector(item, "ImageOrientationPatient", 6)
        for item in group.items("PixelMeasuresSequence")[:1]:
            spacing = spacing or _vector(item, "PixelSpacing", 2)
            thickness = _first_not_none(thickness, _first_float(item, "SliceThickness"))
        for item in group.items("PixelValueTransformationSequence")[:1]:
            slope = _first_not_none(slope, _first_float(item, "RescaleSlope"))
            intercept = _first_not_none(intercept, _first_float(item, "RescaleIntercept"))
        for item in group.items("FrameVOILUTSequence")[:1]:
            centers = centers or (_floats(item.values("WindowCenter")) or ())
            widths = widths or (_floats(item.values("WindowWidth")) or ())
    return FrameInfo(
        image_position_patient=position,  # type: ignore[arg-type]
        image_orientation_patient=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=thickness,
        rescale_slope=slope,
        rescale_intercept=intercept,
        window_centers=centers,
        window_widths=widths,
    )


def _build(src: _Source) -> PixelDescription:
    bits_allocated = _first_int(src, "BitsAllocated", 16) or 16
    bits_stored = _first_int(src, "BitsStored", bits_allocated) or bits_allocated
    samples = _first_int(src, "SamplesPerPixel", 1) or 1
    photometric = _first_str(src, "PhotometricInterpretation")
    if photometric is None:
        photometric = "RGB" if samples == 3 else "MONOCHROME2"

    shared = src.items("SharedFunctionalGroupsSequence")[:1]
    per_frame = src.items("PerFrameFunctionalGroupsSequence")
    frames = tuple(_frame_info([item, *shared]) for item in per_frame)
    shared_info = _frame_info(shared) if shared else FrameInfo()

    def pick(value: Any, shared_value: Any) -> Any:
        return value if value is not None else shared_value

    return PixelDescription(
        rows=_first_int(src, "Rows", 0) or 0,
        columns=_first_int(src, "Columns", 0) or 0,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=_first_int(src, "HighBit", bits_stored - 1) or bits_stored - 1,
        pixel_representation=_first_int(src, "PixelRepresentation", 0) or 0,
        photometric_interpretation=photometric,
        planar_configuration=_first_int(src, "PlanarConfiguration", 0) or 0,
        number_of_frames=max(_first_int(src, "NumberOfFrames", 1) or 1, 1),
        rescale_slope=pick(_first_float(src, "RescaleSlope"), shared_info.rescale_slope),
        rescale_intercept=pick(
            _first_float(src, "RescaleIntercept"), shared_info.rescale_intercept
        ),
        rescale_type=_first_str(src, "RescaleType"),
        window_centers=_floats(src.values("WindowCenter")) or shared_info.window_centers,
        window_widths=_floats(src.values("WindowWidth")) or shared_info.window_widths,
        voi_lut_function=_first_str(src, "VOILUTFunction"),
        pixel_padding_value=_first_int(src, "PixelPaddingValue"),
        red_palette=_palette(src, "Red"),
        green_palette=_palette(src, "Green"),
        blue_palette=_palette(src, "Blue"),
        pixel_spacing=pick(_vector(src, "PixelSpacing", 2), shared_info.pixel_spacing),
        image_position_patient=pick(
            _vector(src, "ImagePositionPatient", 3), shared_info.image_position_patient
        ),
        image_orientation_patient=pick(
            _vector(src, "ImageOrientationPatient", 6), shared_info.image_orientation_patient
        ),
        frame_of_reference_uid=_first_str(src, "FrameOfReferenceUID"),
        slice_thickness=pick(_first_float(src, "SliceThickness"), shared_info.slice_thickness),
        sop_instance_uid=_first_str(src, "SOPInstanceUID"),
        series_instance_uid=_first_str(src, "SeriesInstanceUID"),
        pixel_data_vr=src.vr("PixelData"),
        frames=frames,
    )
