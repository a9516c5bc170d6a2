"""RT Structure Set model and parsing (PS3.3 A.19, C.8.8.5 - C.8.8.8).

:func:`parse_structure_set` reads the Structure Set module (C.8.8.5), the ROI Contour
module (C.8.8.6) and the RT ROI Observations module (C.8.8.8) of an already-read pydicom
dataset. Missing or malformed optional data never raise: problems are collected in
``StructureSet.warnings``.

The geometry of the contours lives beside it: :mod:`.planes` groups closed contours per
plane, :mod:`.polygons` holds the 2-D polygon tests, :mod:`.roi_measures` the volume,
centroid and bounds, :mod:`.rasterize` the voxel masks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d
from .errors import InvalidGeometry, RtError

if TYPE_CHECKING:
    from .planes import PlanarStack


class ContourGeometricType(str, enum.Enum):
    """Contour Geometric Type (3006,0042), PS3.3 C.8.8.6.1."""

    POINT = "POINT"
    OPEN_PLANAR = "OPEN_PLANAR"
    OPEN_NONPLANAR = "OPEN_NONPLANAR"
    CLOSED_PLANAR = "CLOSED_PLANAR"
    CLOSEDPLANAR_XOR = "CLOSEDPLANAR_XOR"  # 2021+ alternative; combined with even-odd too


@dataclass(frozen=True, eq=False)
class Contour:
    """One item of the Contour Sequence (3006,0040), points in patient mm (C.8.8.6)."""

    geometric_type: ContourGeometricType
    points: np.ndarray  # (N, 3) float64
    referenced_sop_instance_uids: tuple[str, ...] = ()
    number: int | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
            raise InvalidGeometry(f"contour points must be (N, 3) with N >= 1, got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise InvalidGeometry("contour points must be finite")
        if self.geometric_type is ContourGeometricType.POINT and pts.shape[0] != 1:
            raise InvalidGeometry("a POINT contour has exactly one point")
        if self.is_closed and pts.shape[0] < 3:
            raise InvalidGeometry("a closed contour needs at least 3 points")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "referenced_sop_instance_uids",
                           tuple(self.referenced_sop_instance_uids))

    @property
    def is_closed(self) -> bool:
        return self.geometric_type in (ContourGeometricType.CLOSED_PLANAR,
                                       ContourGeometricType.CLOSEDPLANAR_XOR)


@dataclass(eq=False)
class Roi:
    """A Structure Set ROI (3006,0020) with its contours (3006,0039) and observation (3006,0080)."""

    number: int
    name: str | None = None
    interpreted_type: str | None = None  # RT ROI Interpreted Type (3006,00A4): PTV, ORGAN, ...
    display_color: tuple[int, int, int] | None = None
    referenced_frame_of_reference_uid: str | None = None
    generation_algorithm: str | None = None
    observation_label: str | None = None
    contours: list[Contour] = field(default_factory=list)
    _stack: PlanarStack | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.display_color is not None:
            color = tuple(int(c) for c in self.display_color)
            if len(color) != 3 or any(c < 0 or c > 255 for c in color):
                raise InvalidGeometry(f"display colour must be 3 values 0..255: {color}")
            self.display_color = color  # type: ignore[assignment]

    @property
    def closed_contours(self) -> list[Contour]:
        return [c for c in self.contours if c.is_closed]

    @property
    def is_point(self) -> bool:
        return bool(self.contours) and all(
            c.geometric_type is ContourGeometricType.POINT for c in self.contours)

    @property
    def number_of_points(self) -> int:
        return int(sum(c.points.shape[0] for c in self.contours))


@dataclass(eq=False)
class StructureSet:
    """An RT Structure Set instance (PS3.3 C.8.8.5)."""

    sop_instance_uid: str | None
    label: str | None
    name: str | None = None
    date: str | None = None
    time: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uids: list[str] = field(default_factory=list)
    referenced_study_uids: list[str] = field(default_factory=list)
    referenced_series_uids: list[str] = field(default_factory=list)
    rois: list[Roi] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def roi(self, number: int) -> Roi | None:
        return next((r for r in self.rois if r.number == number), None)

    def roi_by_name(self, name: str) -> Roi | None:
        key = name.strip().lower()
        return next((r for r in self.rois if (r.name or "").strip().lower() == key), None)


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
def parse_structure_set(ds: Dataset) -> StructureSet:
    """Parse an RTSTRUCT dataset; raises :class:`NotAnRtObject` for other objects only."""
    d.check_kind(ds, [d.RTSTRUCT_SOP_CLASS], ["RTSTRUCT"], "an RT Structure Set")
    w: list[str] = []
    ss = StructureSet(
        sop_instance_uid=d.text(ds, "SOPInstanceUID", w),
        label=d.text(ds, "StructureSetLabel", w),
        name=d.text(ds, "StructureSetName"),
        date=d.text(ds, "StructureSetDate"),
        time=d.text(ds, "StructureSetTime"),
        series_instance_uid=d.text(ds, "SeriesInstanceUID"),
        warnings=w,
    )
    _parse_referenced_frames(ds, ss)
    rois: dict[int, Roi] = {}
    for i, item in enumerate(d.sequence(ds, "StructureSetROISequence", w)):
        ctx = f"StructureSetROISequence[{i}]: "
        number = d.integer(item, "ROINumber", w, ctx)
        if number is None:
            continue
        if number in rois:
            w.append(f"{ctx}duplicate ROINumber {number}")
            continue
        rois[number] = Roi(
            number=number,
            name=d.text(item, "ROIName", w, ctx),
            referenced_frame_of_reference_uid=d.text(item, "ReferencedFrameOfReferenceUID", w, ctx),
            generation_algorithm=d.text(item, "ROIGenerationAlgorithm"),
        )
    _parse_roi_contours(ds, rois, w)
    _parse_observations(ds, rois, w)
    ss.rois = sorted(rois.values(), key=lambda r: r.number)
    return ss


def _parse_referenced_frames(ds: Dataset, ss: StructureSet) -> None:
    # C.8.8.5: Referenced Frame of Reference Sequence > RT Referenced Study Sequence >
    # RT Referenced Series Sequence > Contour Image Sequence.
    for i, ref in enumerate(d.sequence(ds, "ReferencedFrameOfReferenceSequence", ss.warnings)):
        ctx = f"ReferencedFrameOfReferenceSequence[{i}]: "
        for_uid = d.text(ref, "FrameOfReferenceUID", ss.warnings, ctx)
        if for_uid and for_uid not in ss.frame_of_reference_uids:
            ss.frame_of_reference_uids.append(for_uid)
        for study in d.sequence(ref, "RTReferencedStudySequence"):
            study_uid = d.text(study, "ReferencedSOPInstanceUID")
            if study_uid and study_uid not in ss.referenced_study_uids:
                ss.referenced_study_uids.append(study_uid)
            for series in d.sequence(study, "RTReferencedSeriesSequence"):
                uid = d.text(series, "SeriesInstanceUID")
                if uid and uid not in ss.referenced_series_uids:
                    ss.referenced_series_uids.append(uid)


def _parse_roi_contours(ds: Dataset, rois: dict[int, Roi], w: list[str]) -> None:
    for i, item in enumerate(d.sequence(ds, "ROIContourSequence", w)):
        ctx = f"ROIContourSequence[{i}]: "
        number = d.integer(item, "ReferencedROINumber", w, ctx)
        if number is None:
            continue
        roi = rois.get(number)
        if roi is None:
            w.append(f"{ctx}references ROI {number} absent from StructureSetROISequence")
            roi = rois[number] = Roi(number=number)
        color = d.numbers(item, "ROIDisplayColor")
        if color is not None and color.size == 3 and np.all((color >= 0) & (color <= 255)):
            roi.display_color = (int(color[0]), int(color[1]), int(color[2]))
        elif color is not None:
            w.append(f"{ctx}invalid ROIDisplayColor")
        for j, citem in enumerate(d.sequence(item, "ContourSequence")):
            contour = _parse_contour(citem, w, f"ROI {number} contour {j}: ")
            if contour is not None:
                roi.contours.append(contour)


def _parse_contour(item: Dataset, w: list[str], ctx: str) -> Contour | None:
    gtype_text = d.text(item, "ContourGeometricType", w, ctx)
    try:
        gtype = ContourGeometricType(gtype_text)
    except ValueError:
        w.append(f"{ctx}unknown ContourGeometricType {gtype_text!r}, skipped")
        return None
    data = d.numbers(item, "ContourData", w, ctx)
    if data is None:
        return None
    if data.size % 3:
        w.append(f"{ctx}ContourData has {data.size} values, not a multiple of 3; truncated")
        data = data[: data.size - data.size % 3]
    declared = d.integer(item, "NumberOfContourPoints")
    if declared is not None and declared * 3 != data.size:
        w.append(f"{ctx}NumberOfContourPoints {declared} != {data.size // 3} points in ContourData")
    refs = d.uids(d.sequence(item, "ContourImageSequence"))
    try:
        return Contour(gtype, data.reshape(-1, 3), tuple(refs), d.integer(item, "ContourNumber"))
    except RtError as exc:
        w.append(f"{ctx}{exc}; skipped")
        return None


def _parse_observations(ds: Dataset, rois: dict[int, Roi], w: list[str]) -> None:
    for i, item in enumerate(d.sequence(ds, "RTROIObservationsSequence", w)):
        ctx = f"RTROIObservationsSequence[{i}]: "
        number = d.integer(item, "ReferencedROINumber", w, ctx)
        if number is None:
            continue
        roi = rois.get(number)
        if roi is None:
            w.append(f"{ctx}references unknown ROI {number}")
            continue
        roi.interpreted_type = d.text(item, "RTROIInterpretedType") or roi.interpreted_type
        roi.observation_label = d.text(item, "ROIObservationLabel") or roi.observation_label
