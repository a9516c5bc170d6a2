"""SQLModel index tables for RT objects.

All rows are keyed by the ``sop_instance_uid`` (indexed) of the RT instance they were
derived from, not by a foreign key to the study/series/instance tables, so they can be
created, filled and deleted independently. :data:`RT_TABLES` lists the tables for
``SQLModel.metadata.create_all(engine, tables=RT_TABLES)``.
"""

from __future__ import annotations

import json

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy import delete
from sqlmodel import Field, Session, SQLModel

from . import _dicom as d
from .dose import dose_values, parse_dose
from .errors import NotAnRtObject, RtError
from .plan import parse_plan
from .record import RECORD_ROW_MODELS, index_record
from .registration import parse_registration
from .roi_measures import roi_bounds, roi_centroid, roi_volume_cc
from .structures import parse_structure_set


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class RtStructureSetRow(SQLModel, table=True):
    __tablename__ = "rt_structure_sets"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    label: str | None = None
    name: str | None = None
    date: str | None = None
    roi_count: int = 0
    referenced_series_uids: str = "[]"  # JSON list
    warnings: str = "[]"  # JSON list


class RtStructureRow(SQLModel, table=True):
    __tablename__ = "rt_structures"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    roi_number: int = Field(index=True)
    name: str | None = Field(default=None, index=True)
    interpreted_type: str | None = None
    display_color: str | None = None  # JSON [r, g, b]
    referenced_frame_of_reference_uid: str | None = None
    generation_algorithm: str | None = None
    contour_count: int = 0
    volume_cc: float | None = None
    centroid_x: float | None = None
    centroid_y: float | None = None
    centroid_z: float | None = None
    min_x: float | None = None
    min_y: float | None = None
    min_z: float | None = None
    max_x: float | None = None
    max_y: float | None = None
    max_z: float | None = None


class RtContourRow(SQLModel, table=True):
    __tablename__ = "rt_contours"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    roi_number: int
    contour_index: int
    geometric_type: str
    number_of_points: int
    referenced_sop_instance_uid: str | None = None
    points: bytes  # float32 little-endian x0 y0 z0 x1 ...


class RtPlanRow(SQLModel, table=True):
    __tablename__ = "rt_plans"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    label: str | None = None
    name: str | None = None
    date: str | None = None
    geometry: str | None = None
    intent: str | None = None
    ion: bool = False
    referenced_structure_set_uid: str | None = Field(default=None, index=True)
    prescription_dose: float | None = None
    dose_references: str = "[]"  # JSON
    warnings: str = "[]"


class RtFractionGroupRow(SQLModel, table=True):
    __tablename__ = "rt_fraction_groups"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    fraction_group_number: int | None = None
    fractions_planned: int | None = None
    referenced_beams: str = "[]"  # JSON [{beam_number, meterset, beam_dose}]


class RtBeamRow(SQLModel, table=True):
    __tablename__ = "rt_beams"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    beam_number: int | None = None
    name: str | None = None
    beam_type: str | None = None
    radiation_type: str | None = None
    machine: str | None = None
    energy: float | None = None
    source_axis_distance: float | None = None
    isocenter: str | None = None  # JSON [x, y, z]
    number_of_control_points: int = 0
    final_cumulative_meterset_weight: float | None = None
    meterset: float | None = None
    beam_limiting_devices: str = "[]"  # JSON


class RtControlPointRow(SQLModel, table=True):
    __tablename__ = "rt_control_points"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    beam_number: int | None = None
    control_point_index: int
    cumulative_meterset_weight: float | None = None
    gantry_angle: float | None = None
    gantry_rotation_direction: str | None = None
    collimator_angle: float | None = None
    couch_angle: float | None = None
    jaw_x1: float | None = None
    jaw_x2: float | None = None
    jaw_y1: float | None = None
    jaw_y2: float | None = None
    mlc_positions: str | None = None  # JSON {device type: [...]}


class RtDoseRow(SQLModel, table=True):
    __tablename__ = "rt_doses"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    grid: str | None = None  # JSON Grid.to_dict()
    units: str | None = None
    dose_type: str | None = None
    summation_type: str | None = None
    scaling: float | None = None
    referenced_plan_uid: str | None = Field(default=None, index=True)
    max_dose: float | None = None
    warnings: str = "[]"


class SpatialRegistrationRow(SQLModel, table=True):
    __tablename__ = "spatial_registrations"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    registered_frame_of_reference_uid: str | None = Field(default=None, index=True)
    deformable: bool = False
    warnings: str = "[]"


class TransformationMatrixRow(SQLModel, table=True):
    __tablename__ = "transformation_matrices"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    source_frame_of_reference_uid: str | None = Field(default=None, index=True)
    target_frame_of_reference_uid: str | None = Field(default=None, index=True)
    matrix: str  # JSON 4x4 row-major, maps source -> target
    matrix_type: str | None = None  # RIGID / RIGID_SCALE / AFFINE / DEFORMABLE
    deformable_grid: bool = False


class FrameOfReferenceUidRow(SQLModel, table=True):
    __tablename__ = "frame_of_reference_uids"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    frame_of_reference_uid: str = Field(index=True)
    role: str  # own, referenced, registered, registration_source


RT_TABLES = [m.__table__ for m in (  # type: ignore[attr-defined]
    RtStructureSetRow, RtStructureRow, RtContourRow, RtPlanRow, RtFractionGroupRow, RtBeamRow,
    RtControlPointRow, RtDoseRow, SpatialRegistrationRow, TransformationMatrixRow,
    FrameOfReferenceUidRow, *RECORD_ROW_MODELS)]
RT_ROW_MODELS = tuple(t for t in (
    RtStructureSetRow, RtStructureRow, RtContourRow, RtPlanRow, RtFractionGroupRow, RtBeamRow,
    RtControlPointRow, RtDoseRow, SpatialRegistrationRow, TransformationMatrixRow,
    FrameOfReferenceUidRow, *RECORD_ROW_MODELS))


# ----------------------------------------------------------------------------------------
# Indexing
# ----------------------------------------------------------------------------------------
def rt_kind(ds: Dataset) -> str | None:
    """'RTSTRUCT', 'RTPLAN', 'RTDOSE', 'REG', 'RTRECORD' or None for non-RT datasets."""
    return d.rt_kind_of(str(ds.get("SOPClassUID", "") or ""), str(ds.get("Modality", "") or ""))


def index_rt_instance(session: Session, ds: Dataset) -> list[str]:
    """Add the index rows of one RT instance to ``session`` (no commit); returns warnings.

    Raises :class:`NotAnRtObject` for datasets that are not RTSTRUCT/RTPLAN/RTDOSE/REG and
    :class:`RtError` only when the instance has no SOP Instance UID to key rows with.
    """
    kind = rt_kind(ds)
    if kind is None:
        raise NotAnRtObject(f"not an RT object: SOP Class {ds.get('SOPClassUID', '?')}")
    uid = d.text(ds, "SOPInstanceUID")
    if not uid:
        raise RtError("RT instance without SOPInstanceUID cannot be indexed")
    series = d.text(ds, "SeriesInstanceUID")
    indexer = {"RTSTRUCT": _index_structure_set, "RTPLAN": _index_plan,
               "RTDOSE": _index_dose, "REG": _index_registration}.get(kind)
    if indexer is None:  # RTRECORD
        return index_record(session, ds, uid, series, _json)
    return indexer(session, ds, uid, series)


def delete_rt_rows(session: Session, sop_instance_uids: list[str] | tuple[str, ...]) -> int:
    """Delete every RT index row of the given instances (no commit); returns rows deleted."""
    uids = list(sop_instance_uids)
    if not uids:
        return 0
    total = 0
    for model in RT_ROW_MODELS:
        result = session.exec(delete(model).where(model.sop_instance_uid.in_(uids)))  # type: ignore[attr-defined,call-overload]
        total += result.rowcount or 0
    return total


def _for_row(session: Session, uid: str, series: str | None, for_uid: str | None,
             role: str) -> None:
    if for_uid:
        session.add(FrameOfReferenceUidRow(sop_instance_uid=uid, series_instance_uid=series,
                                           frame_of_reference_uid=for_uid, role=role))


def _index_structure_set(session: Session, ds: Dataset, uid: str, series: str | None
                         ) -> list[str]:
    ss = parse_structure_set(ds)
    session.add(RtStructureSetRow(
        sop_instance_uid=uid, series_instance_uid=series, label=ss.label, name=ss.name,
        date=ss.date, roi_count=len(ss.rois),
        referenced_series_uids=_json(ss.referenced_series_uids), warnings=_json(ss.warnings)))
    for for_uid in ss.frame_of_reference_uids:
        _for_row(session, uid, series, for_uid, "referenced")
    warnings = list(ss.warnings)
    for roi in ss.rois:
        try:
            volume = roi_volume_cc(roi)
            centroid = roi_centroid(roi)
        except (RtError, ValueError, FloatingPointError) as exc:
            warnings.append(f"ROI {roi.number}: geometry failed: {exc}")
            volume, centroid = None, None
        bounds = roi_bounds(roi)
        c = [None] * 3 if centroid is None else [float(v) for v in centroid]
        lo = [None] * 3 if bounds is None else [float(v) for v in bounds[0]]
        hi = [None] * 3 if bounds is None else [float(v) for v in bounds[1]]
        session.add(RtStructureRow(
            sop_instance_uid=uid, roi_number=roi.number, name=roi.name,
            interpreted_type=roi.interpreted_type,
            display_color=_json(list(roi.display_color)) if roi.display_color else None,
            referenced_frame_of_reference_uid=roi.referenced_frame_of_reference_uid,
            generation_algorithm=roi.generation_algorithm, contour_count=len(roi.contours),
            volume_cc=volume, centroid_x=c[0], centroid_y=c[1], centroid_z=c[2],
            min_x=lo[0], min_y=lo[1], min_z=lo[2], max_x=hi[0], max_y=hi[1], max_z=hi[2]))
        for i, contour in enumerate(roi.contours):
            refs = contour.referenced_sop_instance_uids
            session.add(RtContourRow(
                sop_instance_uid=uid, roi_number=roi.number, contour_index=i,
                geometric_type=contour.geometric_type.value,
                number_of_points=int(contour.points.shape[0]),
                referenced_sop_instance_uid=refs[0] if refs else None,
                points=contour.points.astype("<f4").tobytes()))
    return warnings


def contour_points_from_blob(blob: bytes) -> np.ndarray:
    """Inverse of the ``rt_contours.points`` encoding: (N, 3) float32."""
    return np.frombuffer(blob, dtype="<f4").reshape(-1, 3)


def _index_plan(session: Session, ds: Dataset, uid: str, series: str | None) -> list[str]:
    plan = parse_plan(ds)
    from .serialize import plan_to_json  # local import: serialize depends on the parsers

    js = plan_to_json(plan, control_points=False)
    session.add(RtPlanRow(
        sop_instance_uid=uid, series_instance_uid=series, label=plan.label, name=plan.name,
        date=plan.date, geometry=plan.geometry, intent=plan.intent, ion=plan.ion,
        referenced_structure_set_uid=plan.referenced_structure_set_uid,
        prescription_dose=plan.prescription_dose, dose_references=_json(js["dose_references"]),
        warnings=_json(plan.warnings)))
    _for_row(session, uid, series, plan.frame_of_reference_uid, "own")
    metersets: dict[int, float] = {}
    for fg, fg_js in zip(plan.fraction_groups, js["fraction_groups"], strict=True):
        session.add(RtFractionGroupRow(
            sop_instance_uid=uid, fraction_group_number=fg.number,
            fractions_planned=fg.fractions_planned, referenced_beams=_json(fg_js["beams"])))
        for b in fg.beams:
            if b.beam_number is not None and b.meterset is not None:
                metersets[b.beam_number] = b.meterset
    for beam, beam_js in zip(plan.beams, js["beams"], strict=True):
        session.add(RtBeamRow(
            sop_instance_uid=uid, beam_number=beam.number, name=beam.name,
            beam_type=beam_js["beam_type"], radiation_type=beam.radiation_type,
            machine=beam.machine, energy=beam.energy,
            source_axis_distance=beam.source_axis_distance,
            isocenter=_json(beam_js["isocenter"]) if beam.isocenter else None,
            number_of_control_points=beam.number_of_control_points,
            final_cumulative_meterset_weight=beam.final_cumulative_meterset_weight,
            meterset=metersets.get(beam.number) if beam.number is not None else None,
            beam_limiting_devices=_json(beam_js["beam_limiting_devices"])))
        for cp in beam.control_points:
            session.add(RtControlPointRow(
                sop_instance_uid=uid, beam_number=beam.number, control_point_index=cp.index,
                cumulative_meterset_weight=cp.cumulative_meterset_weight,
                gantry_angle=cp.gantry_angle,
                gantry_rotation_direction=getattr(cp.gantry_rotation_direction, "value",
                                                  cp.gantry_rotation_direction),
                collimator_angle=cp.collimator_angle, couch_angle=cp.couch_angle,
                jaw_x1=cp.jaw_x[0] if cp.jaw_x else None, jaw_x2=cp.jaw_x[1] if cp.jaw_x else None,
                jaw_y1=cp.jaw_y[0] if cp.jaw_y else None, jaw_y2=cp.jaw_y[1] if cp.jaw_y else None,
                mlc_positions=_json({k: list(v) for k, v in cp.mlc_positions.items()})
                if cp.mlc_positions else None))
    return list(plan.warnings)


def _index_dose(session: Session, ds: Dataset, uid: str, series: str | None) -> list[str]:
    dose = parse_dose(ds)
    warnings = list(dose.warnings)
    max_dose = None
    if dose.has_pixel_data:
        try:
            max_dose = float(np.max(dose_values(ds, dose)))
        except RtError as exc:
            warnings.append(str(exc))
    session.add(RtDoseRow(
        sop_instance_uid=uid, series_instance_uid=series,
        frame_of_reference_uid=dose.frame_of_reference_uid,
        grid=_json(dose.grid.to_dict()) if dose.grid is not None else None,
        units=getattr(dose.units, "value", dose.units),
        dose_type=getattr(dose.dose_type, "value", dose.dose_type),
        summation_type=dose.summation_type, scaling=dose.scaling,
        referenced_plan_uid=dose.referenced_plan_uids[0] if dose.referenced_plan_uids else None,
        max_dose=max_dose, warnings=_json(warnings)))
    _for_row(session, uid, series, dose.frame_of_reference_uid, "own")
    return warnings


def _index_registration(session: Session, ds: Dataset, uid: str, series: str | None
                        ) -> list[str]:
    reg = parse_registration(ds)
    session.add(SpatialRegistrationRow(
        sop_instance_uid=uid, series_instance_uid=series,
        registered_frame_of_reference_uid=reg.registered_for_uid, deformable=reg.deformable,
        warnings=_json(reg.warnings)))
    _for_row(session, uid, series, reg.registered_for_uid, "registered")
    for item in reg.items:
        types = [getattr(t, "value", t) for t in item.matrix_types]
        session.add(TransformationMatrixRow(
            sop_instance_uid=uid, source_frame_of_reference_uid=item.source_for_uid,
            target_frame_of_reference_uid=reg.registered_for_uid,
            matrix=_json(item.matrix.tolist()), matrix_type="\\".join(types) or None))
        if item.source_for_uid != reg.registered_for_uid:
            _for_row(session, uid, series, item.source_for_uid, "registration_source")
    for ditem in reg.deformable_items:
        session.add(TransformationMatrixRow(
            sop_instance_uid=uid, source_frame_of_reference_uid=ditem.source_for_uid,
            target_frame_of_reference_uid=reg.registered_for_uid,
            matrix=_json(ditem.rigid_part.tolist()), matrix_type="DEFORMABLE",
            deformable_grid=ditem.has_grid))
        if ditem.source_for_uid != reg.registered_for_uid:
            _for_row(session, uid, series, ditem.source_for_uid, "registration_source")
    return list(reg.warnings)
