"""Treatment records: ``…/instances/{record}/rt/record`` and a plan's delivery progress
``…/instances/{plan}/rt/plan/progress`` (from every stored record referencing the plan)."""

from __future__ import annotations

from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import Unprocessable
from dicomweb.store.repository import Store

from .. import service as svc
from ..record import RtRecordBeamRow, RtTreatmentRecordRow
from ..tables import RtFractionGroupRow
from .common import json_response, path_of, query_params, run_rt

DELIVERED = "NORMAL"  # Treatment Termination Status of a beam delivered to its end


def _beam_json(b: RtRecordBeamRow) -> dict:
    return {"referenced_beam_number": b.referenced_beam_number, "beam_name": b.beam_name,
            "current_fraction_number": b.current_fraction_number,
            "treatment_delivery_type": b.treatment_delivery_type,
            "termination_status": b.termination_status, "termination_code": b.termination_code,
            "verification_status": b.verification_status,
            "specified_meterset": b.specified_meterset,
            "delivered_meterset": b.delivered_meterset}


def _record_json(row: RtTreatmentRecordRow, beams: list[RtRecordBeamRow]) -> dict:
    return {"sop_instance_uid": row.sop_instance_uid, "ion": row.ion,
            "treatment_date": row.treatment_date, "treatment_time": row.treatment_time,
            "referenced_plan_uid": row.referenced_plan_uid,
            "referenced_fraction_group_number": row.referenced_fraction_group_number,
            "fractions_planned": row.fractions_planned,
            "beams": [_beam_json(b) for b in beams],
            "warnings": svc.loads(row.warnings) or []}


def _beams_of(session: Session, sop: str) -> list[RtRecordBeamRow]:
    return list(session.exec(select(RtRecordBeamRow).where(
        RtRecordBeamRow.sop_instance_uid == sop).order_by(RtRecordBeamRow.id)).all())


def _record_body(store: Store, study: str, series: str, sop: str) -> dict:
    svc.locate_rt(store, study, series, sop, "RTRECORD")
    with Session(store.engine) as session:
        row = session.exec(select(RtTreatmentRecordRow).where(
            RtTreatmentRecordRow.sop_instance_uid == sop)).first()
        if row is None:
            raise Unprocessable(f"RT treatment record {sop} is stored but its content could "
                                "not be indexed")
        return _record_json(row, _beams_of(session, sop))


async def get_record(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_record_body, *path_of(request)))


def _progress_body(store: Store, study: str, series: str, sop: str) -> dict:
    svc.locate_rt(store, study, series, sop, "RTPLAN")
    with Session(store.engine) as session:
        rows = svc.plan_rows(session, sop)
        records = session.exec(select(RtTreatmentRecordRow).where(
            RtTreatmentRecordRow.referenced_plan_uid == sop)).all()
        sessions = [(r, _beams_of(session, r.sop_instance_uid)) for r in records]
    sessions.sort(key=lambda s: ((s[0].treatment_date or ""), (s[0].treatment_time or "")))
    names = {b.beam_number: b.name for b in rows.beams}
    groups = rows.fraction_groups
    return {"sop_instance_uid": sop, "ion": rows.plan.ion,
            "fraction_groups": [_group_progress(g, names, sessions, len(groups) == 1)
                                for g in groups],
            "records": [{"sop_instance_uid": r.sop_instance_uid,
                         "treatment_date": r.treatment_date, "treatment_time": r.treatment_time,
                         "fractions": sorted({b.current_fraction_number for b in beams
                                              if b.current_fraction_number is not None})}
                        for r, beams in sessions]}


def _group_progress(group: RtFractionGroupRow, names: dict, sessions: list,
                    only_group: bool) -> dict:
    """Fractions delivered of planned and, per beam, meterset delivered of planned.

    A record belongs to the group it references (or to the plan's only group when it names
    none). A fraction counts as delivered when every beam of the group has reached NORMAL
    termination in it (over one or more sessions); ``fractions_started`` counts fractions in
    which any meterset was delivered.
    """
    planned_beams = svc.loads(group.referenced_beams) or []
    mine = [(r, beams) for r, beams in sessions
            if r.referenced_fraction_group_number == group.fraction_group_number
            or (r.referenced_fraction_group_number is None and only_group)]
    fractions = group.fractions_planned
    per_beam = []
    completed_by_fraction: dict[int, set] = {}
    started: set[int] = set()
    for _, beams in mine:
        for b in beams:
            if b.current_fraction_number is None:
                continue
            if (b.delivered_meterset or 0) > 0:
                started.add(b.current_fraction_number)
            if (b.termination_status or "").upper() == DELIVERED:
                completed_by_fraction.setdefault(b.current_fraction_number, set()).add(
                    b.referenced_beam_number)
    wanted = {p.get("beam_number") for p in planned_beams}
    delivered_fractions = sorted(f for f, done in completed_by_fraction.items()
                                 if wanted <= done)
    for p in planned_beams:
        number = p.get("beam_number")
        delivered = sum((b.delivered_meterset or 0.0) for _, beams in mine for b in beams
                        if b.referenced_beam_number == number)
        per_fraction = p.get("meterset")
        total = per_fraction * fractions if per_fraction is not None and fractions else None
        per_beam.append({"beam_number": number, "beam_name": names.get(number),
                         "meterset_per_fraction": per_fraction, "meterset_planned": total,
                         "meterset_delivered": round(delivered, 6),
                         "fraction_delivered": round(delivered / total, 6) if total else None})
    return {"fraction_group_number": group.fraction_group_number,
            "fractions_planned": fractions, "fractions_delivered": len(delivered_fractions),
            "delivered_fraction_numbers": delivered_fractions,
            "fractions_started": len(started), "beams": per_beam}


async def get_plan_progress(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_progress_body, *path_of(request)))
