"""RT Structure Sets from the index: structure set, ROI and contour rows → :class:`Roi`, and
the ROIs an overlay draws, mapped into the image's Frame of Reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session, select

from dicomweb.errors import NotFound

from ..errors import RtError
from ..structures import Contour, ContourGeometricType, Roi
from ..tables import (
    FrameOfReferenceUidRow,
    RtContourRow,
    RtStructureRow,
    RtStructureSetRow,
    contour_points_from_blob,
)
from .instances import loads, not_indexed
from .registrations import frame_transform


def structure_set_row(engine: Engine, sop: str, *, parameter: str | None = None
                      ) -> RtStructureSetRow:
    with Session(engine) as session:
        row = session.exec(select(RtStructureSetRow).where(
            RtStructureSetRow.sop_instance_uid == sop)).first()
    if row is None:
        if parameter:
            raise NotFound(f"no RT Structure Set {sop} is stored", parameter=parameter)
        raise not_indexed(sop, "RT Structure Set")
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


#: Why structures are not drawn through a deformation: PS3.3 C.8.8.6 contours are planar
#: polygons, and the overlay cuts them with the image plane as planes (slab model); a warped
#: contour leaves its plane, so drawing it would need a surface model we do not build.
CONTOURS_STAY_RIGID = ("structures are drawn through rigid registrations only (their contours "
                       "are planar, PS3.3 C.8.8.6, and a deformation does not keep them planar)")

#: Contour types drawn by overlays (open contours are not outlines of a region).
OVERLAY_CONTOUR_TYPES = (ContourGeometricType.CLOSED_PLANAR,
                         ContourGeometricType.CLOSEDPLANAR_XOR, ContourGeometricType.POINT)


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
                what=f"{parameter} overlay (RT Structure Set {sop})",
                grid_reason=CONTOURS_STAY_RIGID)[0]
        kept = Roi(number=roi.number, name=roi.name, interpreted_type=roi.interpreted_type,
                   display_color=roi.display_color,
                   referenced_frame_of_reference_uid=roi.referenced_frame_of_reference_uid,
                   generation_algorithm=roi.generation_algorithm, contours=contours)
        out.append(moved_roi(kept, matrices[for_uid]))
    return out
