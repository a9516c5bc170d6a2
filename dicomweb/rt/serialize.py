"""JSON-ready dicts (snake_case keys, floats, points as [x, y, z]) for the HTTP layer.

Intended endpoints: ``/rt/rois`` (:func:`structure_set_to_json`), ``/rt/rois/{number}``
(:func:`roi_to_json` with contours), ``/rt/dose`` (:func:`dose_to_json`), ``/rt/dose/dvh``
(:func:`dvh_to_json`), ``/rt/registration`` (:func:`registration_to_json`) and ``/rt/plan``
(:func:`plan_to_json`).
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from .dose import DoseGrid
from .dvh import Dvh
from .plan import Beam, ControlPoint, Plan
from .registration import Registration
from .roi_measures import roi_bounds, roi_centroid, roi_volume_cc
from .structures import Contour, Roi, StructureSet


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def _vec(x: Any) -> list[float] | None:
    return None if x is None else [float(v) for v in np.asarray(x).reshape(-1)]


def _code(x: Any) -> str | None:
    if x is None:
        return None
    return x.value if isinstance(x, enum.Enum) else str(x)


def contour_to_json(c: Contour) -> dict:
    return {
        "number": c.number,
        "geometric_type": _code(c.geometric_type),
        "number_of_points": int(c.points.shape[0]),
        "points": [[float(v) for v in p] for p in c.points],
        "referenced_sop_instance_uids": list(c.referenced_sop_instance_uids),
    }


def roi_to_json(roi: Roi, *, contours: bool = False, geometry: bool = True) -> dict:
    out: dict[str, Any] = {
        "number": roi.number,
        "name": roi.name,
        "interpreted_type": roi.interpreted_type,
        "observation_label": roi.observation_label,
        "display_color": list(roi.display_color) if roi.display_color else None,
        "referenced_frame_of_reference_uid": roi.referenced_frame_of_reference_uid,
        "generation_algorithm": roi.generation_algorithm,
        "contour_count": len(roi.contours),
        "number_of_points": roi.number_of_points,
    }
    if geometry:
        bounds = roi_bounds(roi)
        out["volume_cc"] = roi_volume_cc(roi)
        out["centroid"] = _vec(roi_centroid(roi))
        out["bounds"] = None if bounds is None else {"min": _vec(bounds[0]),
                                                     "max": _vec(bounds[1])}
    if contours:
        out["contours"] = [contour_to_json(c) for c in roi.contours]
    return out


def structure_set_to_json(ss: StructureSet, *, contours: bool = False) -> dict:
    return {
        "sop_instance_uid": ss.sop_instance_uid,
        "label": ss.label,
        "name": ss.name,
        "date": ss.date,
        "time": ss.time,
        "frame_of_reference_uids": list(ss.frame_of_reference_uids),
        "referenced_study_uids": list(ss.referenced_study_uids),
        "referenced_series_uids": list(ss.referenced_series_uids),
        "rois": [roi_to_json(r, contours=contours) for r in ss.rois],
        "warnings": list(ss.warnings),
    }


def dose_to_json(dose: DoseGrid, max_dose: float | None = None) -> dict:
    return {
        "sop_instance_uid": dose.sop_instance_uid,
        "frame_of_reference_uid": dose.frame_of_reference_uid,
        "units": _code(dose.units),
        "dose_type": _code(dose.dose_type),
        "summation_type": dose.summation_type,
        "scaling": float(dose.scaling),
        "referenced_plan_uids": list(dose.referenced_plan_uids),
        "referenced_beam_numbers": list(dose.referenced_beam_numbers),
        "offset_convention": _code(dose.offset_convention),
        "grid": None if dose.grid is None else dose.grid.to_dict(),
        "max_dose": _f(max_dose),
        "warnings": list(dose.warnings),
    }


def dvh_to_json(dvh: Dvh) -> dict:
    return {
        "roi_number": dvh.roi_number,
        "roi_name": dvh.roi_name,
        "units": dvh.units,
        "bin_width_gy": float(dvh.bin_width_gy),
        "dose_gy": _vec(dvh.dose_bins_gy),
        "volume_cc": _vec(dvh.volume_cc),
        "volume_pct": _vec(dvh.volume_pct),
        "total_volume_cc": float(dvh.total_volume_cc),
        "min_gy": _f(dvh.min_gy),
        "mean_gy": _f(dvh.mean_gy),
        "max_gy": _f(dvh.max_gy),
        "dose_at_volume": [{"volume_pct": m.volume_pct, "dose_gy": m.dose_gy}
                           for m in dvh.dose_at_volume],
        "volume_at_dose": [{"dose_gy": m.dose_gy, "volume_cc": float(m.volume_cc),
                            "volume_pct": float(m.volume_pct)} for m in dvh.volume_at_dose],
        "outside_grid_cc": float(dvh.outside_grid_cc),
        "sample_spacing_mm": float(dvh.sample_spacing_mm),
        "samples": int(dvh.samples),
        "warnings": list(dvh.warnings),
    }


def registration_to_json(reg: Registration) -> dict:
    return {
        "sop_instance_uid": reg.sop_instance_uid,
        "registered_frame_of_reference_uid": reg.registered_for_uid,
        "deformable": reg.deformable,
        "items": [{
            "source_frame_of_reference_uid": i.source_for_uid,
            "target_frame_of_reference_uid": reg.registered_for_uid,
            "matrix": [[float(v) for v in row] for row in i.matrix],
            "matrix_types": [_code(t) for t in i.matrix_types],
            "referenced_image_uids": list(i.referenced_image_uids),
            "comment": i.comment,
        } for i in reg.items],
        "deformable_items": [{
            "source_frame_of_reference_uid": i.source_for_uid,
            "pre_matrix": [[float(v) for v in row] for row in i.pre_matrix],
            "post_matrix": [[float(v) for v in row] for row in i.post_matrix],
            "has_grid": i.has_grid,
            "grid_applied": False,
            "grid_dimensions": list(i.grid_dimensions) if i.grid_dimensions else None,
        } for i in reg.deformable_items],
        "warnings": list(reg.warnings),
    }


def control_point_to_json(cp: ControlPoint) -> dict:
    return {
        "index": cp.index,
        "cumulative_meterset_weight": _f(cp.cumulative_meterset_weight),
        "gantry_angle": _f(cp.gantry_angle),
        "gantry_rotation_direction": _code(cp.gantry_rotation_direction),
        "collimator_angle": _f(cp.collimator_angle),
        "couch_angle": _f(cp.couch_angle),
        "nominal_energy": _f(cp.nominal_energy),
        "dose_rate": _f(cp.dose_rate),
        "isocenter": _vec(cp.isocenter),
        "jaw_x": _vec(cp.jaw_x),
        "jaw_y": _vec(cp.jaw_y),
        "mlc_positions": {k: _vec(v) for k, v in cp.mlc_positions.items()},
        "encoded": list(cp.encoded),
    }


def beam_to_json(beam: Beam, *, control_points: bool = True) -> dict:
    out = {
        "number": beam.number,
        "name": beam.name,
        "beam_type": _code(beam.beam_type),
        "radiation_type": beam.radiation_type,
        "machine": beam.machine,
        "primary_dosimeter_unit": beam.primary_dosimeter_unit,
        "energy": _f(beam.energy),
        "source_axis_distance": _f(beam.source_axis_distance),
        "isocenter": _vec(beam.isocenter),
        "number_of_control_points": beam.number_of_control_points,
        "final_cumulative_meterset_weight": _f(beam.final_cumulative_meterset_weight),
        "treatment_delivery_type": beam.treatment_delivery_type,
        "ion": beam.ion,
        "beam_limiting_devices": [{
            "type": b.device_type,
            "number_of_pairs": b.number_of_pairs,
            "leaf_boundaries": [float(v) for v in b.leaf_boundaries],
        } for b in beam.beam_limiting_devices],
    }
    if control_points:
        out["control_points"] = [control_point_to_json(c) for c in beam.control_points]
    return out


def plan_to_json(plan: Plan, *, control_points: bool = True) -> dict:
    return {
        "sop_instance_uid": plan.sop_instance_uid,
        "label": plan.label,
        "name": plan.name,
        "date": plan.date,
        "time": plan.time,
        "geometry": plan.geometry,
        "intent": plan.intent,
        "ion": plan.ion,
        "referenced_structure_set_uid": plan.referenced_structure_set_uid,
        "prescription_dose": _f(plan.prescription_dose),
        "dose_references": [{
            "number": r.number,
            "structure_type": r.structure_type,
            "type": r.dose_reference_type,
            "description": r.description,
            "referenced_roi_number": r.referenced_roi_number,
            "point": _vec(r.point),
            "target_prescription_dose": _f(r.target_prescription_dose),
            "target_minimum_dose": _f(r.target_minimum_dose),
            "target_maximum_dose": _f(r.target_maximum_dose),
            "delivery_maximum_dose": _f(r.delivery_maximum_dose),
            "organ_at_risk_maximum_dose": _f(r.organ_at_risk_maximum_dose),
        } for r in plan.dose_references],
        "fraction_groups": [{
            "number": fg.number,
            "fractions_planned": fg.fractions_planned,
            "beams": [{"beam_number": b.beam_number, "meterset": _f(b.meterset),
                       "beam_dose": _f(b.beam_dose)} for b in fg.beams],
        } for fg in plan.fraction_groups],
        "beams": [beam_to_json(b, control_points=control_points) for b in plan.beams],
        "warnings": list(plan.warnings),
    }
