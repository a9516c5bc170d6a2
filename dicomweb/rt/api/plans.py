"""RT (Ion) Plan resources: ``…/rt/plan``."""

from __future__ import annotations

from pydicom import dcmread
from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest
from dicomweb.store.repository import InstanceLocation, Store

from .. import service as svc
from ..ionplan import ion_beams
from ..tables import RtControlPointRow
from .common import json_response, path_of, query_params, run_rt


def _plan_body(store: Store, study: str, series: str, sop: str, control_points: bool) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTPLAN")
    with Session(store.engine) as session:
        rows = svc.plan_rows(session, sop)
        cps = session.exec(select(RtControlPointRow).where(
            RtControlPointRow.sop_instance_uid == sop).order_by(RtControlPointRow.id)).all() \
            if control_points else []
    by_beam: dict[int | None, list] = {}
    for cp in cps:
        by_beam.setdefault(cp.beam_number, []).append({
            "index": cp.control_point_index,
            "cumulative_meterset_weight": cp.cumulative_meterset_weight,
            "gantry_angle": cp.gantry_angle,
            "gantry_rotation_direction": cp.gantry_rotation_direction,
            "collimator_angle": cp.collimator_angle,
            "couch_angle": cp.couch_angle,
            "jaw_x": None if cp.jaw_x1 is None else [cp.jaw_x1, cp.jaw_x2],
            "jaw_y": None if cp.jaw_y1 is None else [cp.jaw_y1, cp.jaw_y2],
            "mlc_positions": svc.loads(cp.mlc_positions) or {},
        })
    beam_list = []
    for b in rows.beams:
        entry = {
            "number": b.beam_number, "name": b.name, "beam_type": b.beam_type,
            "radiation_type": b.radiation_type, "machine": b.machine, "energy": b.energy,
            "source_axis_distance": b.source_axis_distance, "isocenter": svc.loads(b.isocenter),
            "meterset": b.meterset, "number_of_control_points": b.number_of_control_points,
            "final_cumulative_meterset_weight": b.final_cumulative_meterset_weight,
            "beam_limiting_devices": svc.loads(b.beam_limiting_devices) or [],
        }
        if control_points:
            entry["control_points"] = by_beam.get(b.beam_number, [])
        beam_list.append(entry)
    plan = rows.plan
    if plan.ion:
        _add_ion(store, loc, beam_list, control_points)
    return {
        "sop_instance_uid": sop, "label": plan.label, "name": plan.name, "date": plan.date,
        "geometry": plan.geometry, "intent": plan.intent, "ion": plan.ion,
        "referenced_structure_set_uid": plan.referenced_structure_set_uid,
        "prescription_dose": plan.prescription_dose,
        "dose_references": svc.loads(plan.dose_references) or [],
        "fraction_groups": [{"number": g.fraction_group_number,
                             "fractions_planned": g.fractions_planned,
                             "beams": svc.loads(g.referenced_beams) or []}
                            for g in rows.fraction_groups],
        "beams": beam_list,
        "warnings": svc.loads(plan.warnings) or [],
    }


def _add_ion(store: Store, loc: InstanceLocation, beams: list[dict], control_points: bool
             ) -> None:
    """The ion-only attributes (:mod:`..ionplan`), under ``ion`` of each beam and control
    point."""
    ion = ion_beams(dcmread(store.blobs.path(loc.blob_key)), control_points)
    for beam in beams:
        extra = dict(ion.get(beam["number"], {}))
        cps = extra.pop("control_points", [])
        beam["ion"] = extra
        for cp, ion_cp in zip(beam.get("control_points", []), cps, strict=False):
            cp["ion"] = ion_cp


async def get_plan(request: Request) -> Response:
    params = query_params(request, {"control_points"})
    flag = params.get("control_points", "true").lower()
    if flag not in ("true", "false"):
        raise BadRequest("control_points must be true or false", parameter="control_points")
    return json_response(await run_rt(_plan_body, *path_of(request), flag == "true"))
