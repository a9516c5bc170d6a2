"""Data access of the RT HTTP API: index rows → library objects, dose grids, image grids.

Everything here is synchronous (the route handlers call it through a thread pool) and reads
only what the index holds, except dose values, which come from the stored RT Dose file and are
kept in a small LRU (:data:`DOSE_CACHE`). No image file is ever parsed: an image series' grid
is built from its instances' stored DICOM JSON.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from pydicom import dcmread
from sqlalchemy import Engine
from sqlmodel import Session, select

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.store.repository import InstanceLocation, Store

from . import _dicom as d
from .deformable import Deformation, deformations
from .dose import DoseGrid, dose_values
from .errors import InvalidGeometry, NoRegistrationPath, RtError
from .fiducials import FIDUCIALS_SOP_CLASS
from .grid import Grid
from .interpolation import DoseSampler
from .record import RECORD_SOP_CLASSES
from .registration import DeformableItem, Registration, RegistrationItem, transform
from .rtimage import RTIMAGE_SOP_CLASS
from .structures import Contour, ContourGeometricType, Roi
from .tables import (
    FrameOfReferenceUidRow,
    RtContourRow,
    RtDoseRow,
    RtStructureRow,
    RtStructureSetRow,
    SpatialRegistrationRow,
    TransformationMatrixRow,
    contour_points_from_blob,
)

KINDS = {
    d.RTSTRUCT_SOP_CLASS: "RTSTRUCT",
    d.RTPLAN_SOP_CLASS: "RTPLAN",
    d.RTIONPLAN_SOP_CLASS: "RTPLAN",
    d.RTDOSE_SOP_CLASS: "RTDOSE",
    d.SPATIAL_REGISTRATION_SOP_CLASS: "REG",
    d.DEFORMABLE_REGISTRATION_SOP_CLASS: "REG",
    **dict.fromkeys(RECORD_SOP_CLASSES, "RTRECORD"),
    FIDUCIALS_SOP_CLASS: "FIDUCIALS",
    RTIMAGE_SOP_CLASS: "RTIMAGE",
}
KIND_NAMES = {
    "RTSTRUCT": "an RT Structure Set",
    "RTPLAN": "an RT (Ion) Plan",
    "RTDOSE": "an RT Dose",
    "REG": "a (Deformable) Spatial Registration",
    "RTRECORD": "an RT (Ion) Beams Treatment Record",
    "FIDUCIALS": "a Spatial Fiducials instance",
    "RTIMAGE": "an RT Image",
}


def loads(value: Any) -> Any:
    return orjson.loads(value) if value else None


# ------------------------------------------------------------------------------------------
# Instances
# ------------------------------------------------------------------------------------------
def locate_rt(store: Store, study: str, series: str, sop: str, kind: str) -> InstanceLocation:
    """The instance at the path, which must be of ``kind``; NotFound otherwise (the RT
    sub-resource does not exist for other objects)."""
    loc = store.locate(study, series, sop)[0]
    actual = KINDS.get(loc.sop_class_uid)
    if actual != kind:
        what = KIND_NAMES[actual] if actual else f"SOP Class {loc.sop_class_uid or '?'}"
        raise NotFound(
            f"instance {sop} is {what}, not {KIND_NAMES[kind]}; this RT resource exists only "
            f"for {kind} instances"
        )
    return loc


def _not_indexed(sop: str, what: str) -> Unprocessable:
    return Unprocessable(
        f"{what} {sop} is stored but its RT content could not be indexed (see the warnings "
        "returned when it was stored)"
    )


# ------------------------------------------------------------------------------------------
# Structure sets
# ------------------------------------------------------------------------------------------
def structure_set_row(engine: Engine, sop: str, *, parameter: str | None = None
                      ) -> RtStructureSetRow:
    with Session(engine) as session:
        row = session.exec(select(RtStructureSetRow).where(
            RtStructureSetRow.sop_instance_uid == sop)).first()
    if row is None:
        if parameter:
            raise NotFound(f"no RT Structure Set {sop} is stored", parameter=parameter)
        raise _not_indexed(sop, "RT Structure Set")
    return row


def structure_set_frames(engine: Engine, sop: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(FrameOfReferenceUidRow.frame_of_reference_uid).where(
            FrameOfReferenceUidRow.sop_instance_uid == sop)).all()
    return list(dict.fromkeys(rows))


def roi_rows(engine: Engine, sop: str) -> list[RtStructureRow]:
    with Session(engine) as session:
        return list(session.exec(select(RtStructureRow).where(
            RtStructureRow.sop_instance_uid == sop).order_by(RtStructureRow.roi_number)).all())


def roi_row(engine: Engine, sop: str, number: int, *, parameter: str | None = None
            ) -> RtStructureRow:
    with Session(engine) as session:
        row = session.exec(select(RtStructureRow).where(
            RtStructureRow.sop_instance_uid == sop,
            RtStructureRow.roi_number == number)).first()
    if row is None:
        raise NotFound(f"RT Structure Set {sop} has no ROI number {number}", parameter=parameter)
    return row


def contour_rows(engine: Engine, sop: str, number: int) -> list[RtContourRow]:
    with Session(engine) as session:
        return list(session.exec(select(RtContourRow).where(
            RtContourRow.sop_instance_uid == sop, RtContourRow.roi_number == number
        ).order_by(RtContourRow.contour_index)).all())


def roi_frame_of_reference(row: RtStructureRow, frames: Sequence[str]) -> str | None:
    """The ROI's Referenced Frame of Reference, else the structure set's only one."""
    if row.referenced_frame_of_reference_uid:
        return row.referenced_frame_of_reference_uid
    return frames[0] if len(frames) == 1 else None


def load_roi(engine: Engine, sop: str, row: RtStructureRow) -> Roi:
    """The ROI rebuilt from the index (contour points are float32 in ``rt_contours``)."""
    contours = []
    for c in contour_rows(engine, sop, row.roi_number):
        try:
            gtype = ContourGeometricType(c.geometric_type)
            points = contour_points_from_blob(bytes(c.points)).astype(np.float64)
            refs = (c.referenced_sop_instance_uid,) if c.referenced_sop_instance_uid else ()
            contours.append(Contour(gtype, points, refs, c.contour_index + 1))
        except (ValueError, RtError):
            continue  # the indexer already warned about unusable contours
    color = loads(row.display_color)
    return Roi(number=row.roi_number, name=row.name, interpreted_type=row.interpreted_type,
               display_color=tuple(color) if color else None,
               referenced_frame_of_reference_uid=row.referenced_frame_of_reference_uid,
               generation_algorithm=row.generation_algorithm, contours=contours)


def moved_roi(roi: Roi, matrix: np.ndarray) -> Roi:
    """A copy of ``roi`` with every contour point mapped by the 4×4 ``matrix``."""
    if np.allclose(matrix, np.eye(4)):
        return roi
    contours = [Contour(c.geometric_type, c.points @ matrix[:3, :3].T + matrix[:3, 3],
                        c.referenced_sop_instance_uids, c.number) for c in roi.contours]
    return Roi(number=roi.number, name=roi.name, interpreted_type=roi.interpreted_type,
               display_color=roi.display_color,
               referenced_frame_of_reference_uid=roi.referenced_frame_of_reference_uid,
               generation_algorithm=roi.generation_algorithm, contours=contours)


# ------------------------------------------------------------------------------------------
# Doses
# ------------------------------------------------------------------------------------------
def dose_row(engine: Engine, sop: str) -> RtDoseRow:
    with Session(engine) as session:
        row = session.exec(select(RtDoseRow).where(RtDoseRow.sop_instance_uid == sop)).first()
    if row is None:
        raise _not_indexed(sop, "RT Dose")
    return row


def dose_grid_object(row: RtDoseRow) -> DoseGrid:
    grid = Grid.from_dict(loads(row.grid)) if row.grid else None
    scaling = row.scaling if row.scaling is not None and np.isfinite(row.scaling) else 1.0
    return DoseGrid(row.sop_instance_uid, grid, row.frame_of_reference_uid, row.units,
                    row.dose_type, row.summation_type, max(scaling, 0.0),
                    [row.referenced_plan_uid] if row.referenced_plan_uid else [],
                    has_pixel_data=grid is not None)


class DoseCache:
    """Thread-safe LRU of decoded dose grids (float32, with the interpolation terms derived
    from them), bounded by their total bytes."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], DoseSampler] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: tuple[str, str], loader: Any) -> DoseSampler:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        values = loader()
        values.setflags(write=False)
        sampler = DoseSampler(values)
        with self._lock:
            sampler = self._items.setdefault(key, sampler)
            self._items.move_to_end(key)
            self.trim()
        return sampler

    def trim(self) -> None:
        """Drop the least recently used grids beyond ``max_bytes`` (derived terms count)."""
        while sum(v.nbytes for v in self._items.values()) > self.max_bytes and \
                len(self._items) > 1:
            self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


DOSE_CACHE = DoseCache()


def load_dose(store: Store, loc: InstanceLocation) -> tuple[DoseGrid, np.ndarray]:
    """Geometry (from the index) and values in the Dose Units (from the stored file)."""
    dose, sampler = load_dose_sampler(store, loc)
    return dose, sampler.values


def load_dose_sampler(store: Store, loc: InstanceLocation) -> tuple[DoseGrid, DoseSampler]:
    """As :func:`load_dose`, the values inside their (cached) :class:`DoseSampler`."""
    row = dose_row(store.engine, loc.sop_instance_uid)
    dose = dose_grid_object(row)
    if dose.grid is None:
        raise Unprocessable(f"RT Dose {loc.sop_instance_uid} has no usable dose grid "
                            f"({'; '.join(loads(row.warnings) or []) or 'no pixel data'})")

    def read() -> np.ndarray:
        ds = dcmread(store.blobs.path(loc.blob_key))
        try:
            return dose_values(ds, dose)
        except RtError as exc:
            raise Unprocessable(str(exc)) from exc

    # The blob key changes whenever the stored file does, so it versions the cache entry.
    sampler = DOSE_CACHE.get_or_load((loc.sop_instance_uid, loc.blob_key), read)
    if sampler.values.shape != dose.grid.shape:
        raise Unprocessable(f"RT Dose pixel data {sampler.values.shape} does not match its "
                            f"grid {dose.grid.shape}")
    return dose, sampler


# ------------------------------------------------------------------------------------------
# Image series grids (from stored metadata, never from the image files)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SeriesGrid:
    series_instance_uid: str
    grid: Grid
    frame_of_reference_uid: str | None
    modality: str | None
    sop_instance_uids: tuple[str, ...]  # in slice order


def _value(md: dict, tag: str) -> list | None:
    element = md.get(tag)
    return element.get("Value") if isinstance(element, dict) else None


def series_grid(store: Store, study: str, series: str, *, parameter: str = "series"
                ) -> SeriesGrid:
    """The voxel grid of a single-frame image series, from its instances' metadata JSON."""
    try:
        locs = store.locate(study, series, with_metadata=True)
    except NotFound:
        raise NotFound(f"no series {series} in study {study}", parameter=parameter) from None
    slices = []
    for_uids, modalities = set(), set()
    for loc in locs:
        md = orjson.loads(loc.metadata_json or b"{}")
        ipp, iop = _value(md, "00200032"), _value(md, "00200037")
        spacing = _value(md, "00280030")
        rows, cols = _value(md, "00280010"), _value(md, "00280011")
        frames = _value(md, "00280008")
        if not (ipp and iop and spacing and rows and cols):
            continue  # not an image slice (e.g. a localiser without geometry)
        if frames and int(float(frames[0])) > 1:
            raise Unprocessable(f"series {series} holds multi-frame images; only series of "
                                "single-frame slices can serve as a grid", parameter=parameter)
        for_uid = _value(md, "00200052")
        for_uids.add(for_uid[0] if for_uid else None)
        modality = _value(md, "00080060")
        modalities.add(modality[0] if modality else None)
        slices.append((loc.sop_instance_uid, np.array([float(v) for v in ipp]),
                       np.array([float(v) for v in iop]), float(spacing[0]), float(spacing[1]),
                       int(rows[0]), int(cols[0])))
    if not slices:
        raise Unprocessable(f"series {series} has no image slices with a geometry",
                            parameter=parameter)
    iop0 = slices[0][2]
    if any(not np.allclose(s[2], iop0, atol=1e-4) or s[3:] != slices[0][3:] for s in slices):
        raise Unprocessable(f"series {series} is not one regular stack (orientation, spacing "
                            "or size differ between slices)", parameter=parameter)
    normal = np.cross(iop0[:3], iop0[3:])
    slices.sort(key=lambda s: float(s[1] @ normal))
    along = np.array([float(s[1] @ normal) for s in slices])
    if along.size > 1 and np.any(np.diff(along) < 1e-4):
        raise Unprocessable(f"series {series} has several slices at the same position",
                            parameter=parameter)
    first = slices[0]
    try:
        grid = Grid(first[1], iop0[:3], iop0[3:], first[3], first[4], along - along[0],
                    first[5], first[6])
    except InvalidGeometry as exc:
        raise Unprocessable(f"series {series}: {exc}", parameter=parameter) from exc
    return SeriesGrid(series, grid, next(iter(for_uids)) if len(for_uids) == 1 else None,
                      next(iter(modalities)) if len(modalities) == 1 else None,
                      tuple(s[0] for s in slices))


# ------------------------------------------------------------------------------------------
# Registrations
# ------------------------------------------------------------------------------------------
def registration_objects(engine: Engine, sops: Sequence[str]) -> list[Registration]:
    """Registrations rebuilt from the index rows of the given REG instances."""
    if not sops:
        return []
    with Session(engine) as session:
        regs = session.exec(select(SpatialRegistrationRow).where(
            SpatialRegistrationRow.sop_instance_uid.in_(list(sops)))).all()  # type: ignore[attr-defined]
        matrices = session.exec(select(TransformationMatrixRow).where(
            TransformationMatrixRow.sop_instance_uid.in_(list(sops))  # type: ignore[attr-defined]
        ).order_by(TransformationMatrixRow.id)).all()
    out = []
    for reg in regs:
        obj = Registration(reg.sop_instance_uid, reg.registered_frame_of_reference_uid,
                           reg.deformable, reg.series_instance_uid,
                           warnings=loads(reg.warnings) or [])
        for m in matrices:
            if m.sop_instance_uid != reg.sop_instance_uid:
                continue
            matrix = np.array(loads(m.matrix), dtype=np.float64)
            if m.matrix_type == "DEFORMABLE":
                obj.deformable_items.append(DeformableItem(
                    m.source_frame_of_reference_uid, np.eye(4), matrix, m.deformable_grid))
            else:
                types = tuple((m.matrix_type or "").split("\\")) if m.matrix_type else ()
                obj.items.append(RegistrationItem(m.source_frame_of_reference_uid, matrix,
                                                  types))
        out.append(obj)
    return out


def study_registration_uids(engine: Engine, study: str) -> list[str]:
    from dicomweb.store.tables import Instance

    with Session(engine) as session:
        return list(session.exec(select(Instance.sop_instance_uid).where(
            Instance.study_instance_uid == study,
            Instance.sop_class_uid.in_([  # type: ignore[attr-defined]
                d.SPATIAL_REGISTRATION_SOP_CLASS, d.DEFORMABLE_REGISTRATION_SOP_CLASS]))).all())


def frame_transform(engine: Engine, registration: str | None, from_for: str | None,
                    to_for: str | None, *, what: str) -> tuple[np.ndarray, str | None]:
    """4×4 matrix mapping points of ``from_for`` into ``to_for``.

    Identity when the Frames of Reference are equal; otherwise the REG instance
    ``registration`` (query parameter ``registration``) must link them, else 422.
    """
    if from_for and to_for and from_for == to_for:
        return np.eye(4), None
    if not from_for or not to_for:
        raise Unprocessable(f"{what}: a Frame of Reference is unknown, so positions cannot be "
                            "related")
    if not registration:
        raise Unprocessable(
            f"{what}: Frames of Reference differ ({from_for} vs {to_for}); give "
            "registration={REG SOP Instance UID} to relate them", parameter="registration")
    regs = registration_objects(engine, [registration])
    if not regs:
        raise NotFound(f"no Spatial Registration {registration} is stored",
                       parameter="registration")
    try:
        return transform(regs, from_for, to_for), registration
    except NoRegistrationPath as exc:
        raise Unprocessable(f"{what}: registration {registration} does not relate "
                            f"{from_for} to {to_for} ({exc})", parameter="registration") from exc


@lru_cache(maxsize=4)
def _deformations_of(path: str) -> tuple[Deformation, ...]:
    try:
        return tuple(deformations(dcmread(path)))
    except RtError as exc:
        raise Unprocessable(f"deformable registration: {exc}") from exc


def deformation_mapper(store: Store, registration: str | None, from_for: str | None,
                       to_for: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """When ``registration`` is a Deformable Spatial Registration whose grid relates the two
    Frames of Reference: the function mapping points of ``from_for`` into ``to_for`` through
    the grid (:mod:`.deformable`); None otherwise (matrices answer)."""
    if not registration or not from_for or not to_for or from_for == to_for:
        return None
    regs = registration_objects(store.engine, [registration])
    if not regs or not any(i.has_grid for i in regs[0].deformable_items):
        return None
    loc = instance_by_sop(store, registration, "REG", parameter="registration")
    for deformation in _deformations_of(str(store.blobs.path(loc.blob_key))):
        mapper = deformation.mapper(from_for, to_for)
        if mapper is not None:
            return mapper
    return None


# ------------------------------------------------------------------------------------------
# Overlays (rendered / MPR images): RT objects named by SOP Instance UID alone
# ------------------------------------------------------------------------------------------
#: Contour types drawn by overlays (open contours are not outlines of a region).
OVERLAY_CONTOUR_TYPES = (ContourGeometricType.CLOSED_PLANAR,
                         ContourGeometricType.CLOSEDPLANAR_XOR, ContourGeometricType.POINT)


def instance_by_sop(store: Store, sop: str, kind: str, *, parameter: str) -> InstanceLocation:
    """The stored instance with this SOP Instance UID (any study), which must be of ``kind``;
    404 naming ``parameter`` otherwise."""
    from dicomweb.store.tables import Instance

    with Session(store.engine) as session:
        row = session.exec(select(Instance.study_instance_uid, Instance.series_instance_uid)
                           .where(Instance.sop_instance_uid == sop)).first()
    if row is None:
        raise NotFound(f"no instance {sop} is stored ({parameter})", parameter=parameter)
    try:
        loc = store.locate(row[0], row[1], sop)[0]
    except NotFound:  # deleted meanwhile
        raise NotFound(f"no instance {sop} is stored ({parameter})", parameter=parameter) from None
    actual = KINDS.get(loc.sop_class_uid)
    if actual != kind:
        what = KIND_NAMES[actual] if actual else f"of SOP Class {loc.sop_class_uid or '?'}"
        raise NotFound(f"{parameter}: instance {sop} is {what}, not {KIND_NAMES[kind]}",
                       parameter=parameter)
    return loc


def overlay_rois(engine: Engine, sop: str, numbers: Sequence[int] | None,
                 target_for: str | None, registration: str | None, *,
                 parameter: str = "structures", numbers_parameter: str = "rois") -> list[Roi]:
    """The ROIs of structure set ``sop`` to draw on an image in ``target_for``.

    ``numbers`` selects ROIs by ROI Number (404 naming ``numbers_parameter`` for unknown
    ones); None takes every ROI with closed planar or point contours. Only those contours
    are kept, mapped into ``target_for`` (through ``registration`` when the ROI's Frame of
    Reference differs; 422 without it).
    """
    structure_set_row(engine, sop, parameter=parameter)
    frames = structure_set_frames(engine, sop)
    rows = roi_rows(engine, sop)
    if numbers is not None:
        by_number = {r.roi_number: r for r in rows}
        missing = [n for n in numbers if n not in by_number]
        if missing:
            raise NotFound(f"RT Structure Set {sop} has no ROI number "
                           f"{', '.join(map(str, missing))}", parameter=numbers_parameter)
        rows = [by_number[n] for n in dict.fromkeys(numbers)]
    matrices: dict[str | None, np.ndarray] = {}
    out = []
    for row in rows:
        roi = load_roi(engine, sop, row)
        contours = [c for c in roi.contours if c.geometric_type in OVERLAY_CONTOUR_TYPES]
        if not contours:
            continue
        for_uid = roi_frame_of_reference(row, frames)
        if for_uid not in matrices:
            matrices[for_uid] = frame_transform(
                engine, registration, for_uid, target_for,
                what=f"{parameter} overlay (RT Structure Set {sop})")[0]
        kept = Roi(number=roi.number, name=roi.name, interpreted_type=roi.interpreted_type,
                   display_color=roi.display_color,
                   referenced_frame_of_reference_uid=roi.referenced_frame_of_reference_uid,
                   generation_algorithm=roi.generation_algorithm, contours=contours)
        out.append(moved_roi(kept, matrices[for_uid]))
    return out


# ------------------------------------------------------------------------------------------
# Resampling through a matrix
# ------------------------------------------------------------------------------------------
