"""Pixel description: the Image Pixel module (PS3.3 C.7.6.3) and related attributes
needed to decode, render and reformat frames without parsing the DICOM file.

Built either from the stored DICOM JSON (PS3.18 Annex F) or from a pydicom Dataset.
Every optional attribute may be missing: constructors never raise on absent or
malformed optional values, they leave the field ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .attribute_sources import (
    AttributeSource,
    DatasetSource,
    JsonSource,
    as_floats,
    as_int,
    first_float,
    first_int,
    first_not_none,
    first_str,
    vector,
)
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
            slice_thickness=first_not_none(info.slice_thickness, self.slice_thickness),
            rescale_slope=first_not_none(info.rescale_slope, self.rescale_slope),
            rescale_intercept=first_not_none(info.rescale_intercept, self.rescale_intercept),
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
        return _build(JsonSource(d))

    @classmethod
    def from_dataset(cls, ds: Any) -> PixelDescription:
        """Build from a :class:`pydicom.dataset.Dataset`."""
        return _build(DatasetSource(ds))


def _palette(src: AttributeSource, color: str) -> PaletteLUT | None:
    descriptor = [as_int(v) for v in src.values(f"{color}PaletteColorLookupTableDescriptor")]
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


def _frame_info(groups: Sequence[AttributeSource]) -> FrameInfo:
    """Merge functional group macros (PS3.3 C.7.6.16.2), earlier groups win."""
    position = orientation = spacing = None
    thickness = slope = intercept = None
    centers: tuple[float, ...] = ()
    widths: tuple[float, ...] = ()
    for group in groups:
        for item in group.items("PlanePositionSequence")[:1]:
            position = position or vector(item, "ImagePositionPatient", 3)
        for item in group.items("PlaneOrientationSequence")[:1]:
            orientation = orientation or vector(item, "ImageOrientationPatient", 6)
        for item in group.items("PixelMeasuresSequence")[:1]:
            spacing = spacing or vector(item, "PixelSpacing", 2)
            thickness = first_not_none(thickness, first_float(item, "SliceThickness"))
        for item in group.items("PixelValueTransformationSequence")[:1]:
            slope = first_not_none(slope, first_float(item, "RescaleSlope"))
            intercept = first_not_none(intercept, first_float(item, "RescaleIntercept"))
        for item in group.items("FrameVOILUTSequence")[:1]:
            centers = centers or (as_floats(item.values("WindowCenter")) or ())
            widths = widths or (as_floats(item.values("WindowWidth")) or ())
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


def _build(src: AttributeSource) -> PixelDescription:
    bits_allocated = first_int(src, "BitsAllocated", 16) or 16
    bits_stored = first_int(src, "BitsStored", bits_allocated) or bits_allocated
    samples = first_int(src, "SamplesPerPixel", 1) or 1
    photometric = first_str(src, "PhotometricInterpretation")
    if photometric is None:
        photometric = "RGB" if samples == 3 else "MONOCHROME2"

    shared = src.items("SharedFunctionalGroupsSequence")[:1]
    per_frame = src.items("PerFrameFunctionalGroupsSequence")
    frames = tuple(_frame_info([item, *shared]) for item in per_frame)
    shared_info = _frame_info(shared) if shared else FrameInfo()

    def pick(value: Any, shared_value: Any) -> Any:
        return value if value is not None else shared_value

    return PixelDescription(
        rows=first_int(src, "Rows", 0) or 0,
        columns=first_int(src, "Columns", 0) or 0,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=first_int(src, "HighBit", bits_stored - 1) or bits_stored - 1,
        pixel_representation=first_int(src, "PixelRepresentation", 0) or 0,
        photometric_interpretation=photometric,
        planar_configuration=first_int(src, "PlanarConfiguration", 0) or 0,
        number_of_frames=max(first_int(src, "NumberOfFrames", 1) or 1, 1),
        rescale_slope=pick(first_float(src, "RescaleSlope"), shared_info.rescale_slope),
        rescale_intercept=pick(
            first_float(src, "RescaleIntercept"), shared_info.rescale_intercept
        ),
        rescale_type=first_str(src, "RescaleType"),
        window_centers=as_floats(src.values("WindowCenter")) or shared_info.window_centers,
        window_widths=as_floats(src.values("WindowWidth")) or shared_info.window_widths,
        voi_lut_function=first_str(src, "VOILUTFunction"),
        pixel_padding_value=first_int(src, "PixelPaddingValue"),
        red_palette=_palette(src, "Red"),
        green_palette=_palette(src, "Green"),
        blue_palette=_palette(src, "Blue"),
        pixel_spacing=pick(vector(src, "PixelSpacing", 2), shared_info.pixel_spacing),
        image_position_patient=pick(
            vector(src, "ImagePositionPatient", 3), shared_info.image_position_patient
        ),
        image_orientation_patient=pick(
            vector(src, "ImageOrientationPatient", 6), shared_info.image_orientation_patient
        ),
        frame_of_reference_uid=first_str(src, "FrameOfReferenceUID"),
        slice_thickness=pick(first_float(src, "SliceThickness"), shared_info.slice_thickness),
        sop_instance_uid=first_str(src, "SOPInstanceUID"),
        series_instance_uid=first_str(src, "SeriesInstanceUID"),
        pixel_data_vr=src.vr("PixelData"),
        frames=frames,
    )
