"""The RT graph of a study: which series belong together and in which workflow stage.

Built only from the index (hierarchy tables and RT tables), never from files:

* **Frames of Reference** group the series (a series without one is grouped under ``null``).
* **Links** (each with the evidence it rests on):
  ``structures_on_images`` RTSTRUCT → image series (its RT Referenced Series Sequence, the
  series of its Contour Image Sequence instances, else the image series sharing its Frame of
  Reference: ``via`` says which); ``plan_uses_structures`` RTPLAN → RTSTRUCT
  (Referenced Structure Set Sequence); ``dose_of_plan`` RTDOSE → RTPLAN (Referenced RT Plan
  Sequence); ``registers`` REG → Frame of Reference pairs (from the item's FoR to the
  registration's own, i.e. the direction its matrices map points).
* **missing**: every reference whose target is not stored (a referenced series, image, plan
  or structure set, a Frame of Reference no series has). Nothing is guessed.
* **Stage** of each series, with the reason: ``simulation`` (an image series whose Frame of
  Reference or images the study's structure sets/plans reference), ``planning`` (RTSTRUCT,
  RTPLAN, RTDOSE; a REG onto a simulation Frame of Reference; imaging registered onto it and
  not acquired after planning), ``treatment`` (RT treatment records), ``follow_up`` (imaging
  acquired after the latest planning object's date), else ``unknown``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlmodel import Session, select

from dicomweb.errors import NotFound
from dicomweb.store.access import EVERY_STUDY, StudyFilter
from dicomweb.store.tables import Instance, Series

from .tables import (
    FrameOfReferenceUidRow,
    RtContourRow,
    RtDoseRow,
    RtPlanRow,
    RtStructureSetRow,
    SpatialRegistrationRow,
    TransformationMatrixRow,
)

RT_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "REG", "RTION", "PLAN"}
PLANNING = {"RTSTRUCT", "RTPLAN", "RTDOSE"}
TREATMENT_RECORD_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT Beams Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT Brachy Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT Treatment Summary Record
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT Ion Beams Treatment Record
}
NON_IMAGING = RT_MODALITIES | {"SR", "KO", "PR", "SEG", "DOC", "OT"}


def _loads(value: Any) -> Any:
    return orjson.loads(value) if value else None


def study_graph(engine: Engine, study: str, access: StudyFilter = EVERY_STUDY) -> dict:
    """The study's RT graph; referenced images in other studies count only when `access`
    lets the caller see those studies."""
    with Session(engine) as session:
        series_rows = session.exec(select(Series).where(Series.study_instance_uid == study)
                                   .order_by(Series.series_number)).all()
        if not series_rows:
            raise NotFound(f"no study {study}")
        instances = session.exec(select(Instance.sop_instance_uid, Instance.series_instance_uid,
                                        Instance.sop_class_uid)
                                 .where(Instance.study_instance_uid == study)).all()
        sops = [i[0] for i in instances]
        ss_rows = _rows(session, RtStructureSetRow, sops)
        plan_rows = _rows(session, RtPlanRow, sops)
        dose_rows = _rows(session, RtDoseRow, sops)
        reg_rows = _rows(session, SpatialRegistrationRow, sops)
        matrix_rows = _rows(session, TransformationMatrixRow, sops)
        for_rows = _rows(session, FrameOfReferenceUidRow, sops)
        contour_refs: dict[str, set[str]] = defaultdict(set)
        ss_uids = [r.sop_instance_uid for r in ss_rows]
        for chunk in _chunks(ss_uids):
            for sop, ref in session.exec(
                    select(RtContourRow.sop_instance_uid, RtContourRow.referenced_sop_instance_uid)
                    .where(RtContourRow.sop_instance_uid.in_(chunk))  # type: ignore[attr-defined]
                    .distinct()).all():
                if ref:
                    contour_refs[sop].add(ref)
        # Referenced images may live in other studies of the store: look them up too.
        all_refs = sorted(set().union(*contour_refs.values()) - set(sops)) if contour_refs else []
        outside: dict[str, str] = {}
        for chunk in _chunks(all_refs):
            for sop, series in session.exec(
                    select(Instance.sop_instance_uid, Instance.series_instance_uid)
                    .where(Instance.sop_instance_uid.in_(chunk))  # type: ignore[attr-defined]
                    .where(access.clause(Instance.study_instance_uid))).all():
                outside[sop] = series

    series_of = {sop: series for sop, series, _ in instances}
    series_of.update(outside)
    sop_classes = {sop: cls for sop, _, cls in instances}
    by_series: dict[str, list[str]] = defaultdict(list)
    for sop, series, _ in instances:
        by_series[series].append(sop)
    info = {s.series_instance_uid: s for s in series_rows}
    own_for: dict[str, str | None] = {}
    for s in series_rows:
        own_for[s.series_instance_uid] = s.frame_of_reference_uid or None
    # RT objects without a top-level FrameOfReferenceUID: the FoR their content uses.
    for row in for_rows:
        series = series_of.get(row.sop_instance_uid)
        if series and not own_for.get(series) and row.role in ("own", "referenced",
                                                               "registered"):
            own_for[series] = row.frame_of_reference_uid
    known_fors = {f for f in own_for.values() if f}
    image_series = [s for s in series_rows if (s.modality or "") not in NON_IMAGING]

    links: list[dict] = []
    missing: list[dict] = []

    def series_ref(sop: str) -> dict:
        return {"series_instance_uid": series_of.get(sop), "sop_instance_uid": sop}

    # RTSTRUCT -> image series
    sim_fors: set[str] = set()
    sim_series: set[str] = set()
    for ss in ss_rows:
        src = series_ref(ss.sop_instance_uid)
        targets: dict[str, str] = {}
        for uid in _loads(ss.referenced_series_uids) or []:
            if uid in info:
                targets.setdefault(uid, "referenced_series")
            else:
                missing.append({**src, "reference": "referenced_series", "uid": uid,
                                "message": f"structure set references series {uid}, "
                                           "which is not stored"})
        absent = sorted(r for r in contour_refs.get(ss.sop_instance_uid, ()) if r not in series_of)
        for ref in contour_refs.get(ss.sop_instance_uid, ()):
            if ref in series_of:
                targets.setdefault(series_of[ref], "contour_image_sequence")
        if absent:
            missing.append({**src, "reference": "contour_image", "uids": absent,
                            "message": f"{len(absent)} contour image(s) are not stored"})
        fors = [r.frame_of_reference_uid for r in for_rows
                if r.sop_instance_uid == ss.sop_instance_uid]
        if not targets:
            for s in image_series:
                if s.frame_of_reference_uid and s.frame_of_reference_uid in fors:
                    targets.setdefault(s.series_instance_uid, "frame_of_reference")
        for series, via in targets.items():
            links.append({"type": "structures_on_images", "from": src,
                          "to": {"series_instance_uid": series}, "via": via})
            sim_series.add(series)
        sim_fors.update(fors)
    # RTPLAN -> RTSTRUCT
    plan_dates = []
    for plan in plan_rows:
        src = series_ref(plan.sop_instance_uid)
        if plan.date:
            plan_dates.append(plan.date)
        for r in for_rows:
            if r.sop_instance_uid == plan.sop_instance_uid:
                sim_fors.add(r.frame_of_reference_uid)
        ref = plan.referenced_structure_set_uid
        if ref:
            if ref in series_of and ref in sop_classes:
                links.append({"type": "plan_uses_structures", "from": src,
                              "to": series_ref(ref)})
            else:
                missing.append({**src, "reference": "referenced_structure_set", "uid": ref,
                                "message": f"plan references structure set {ref}, "
                                           "which is not stored in this study"})
    # RTDOSE -> RTPLAN
    for dose in dose_rows:
        src = series_ref(dose.sop_instance_uid)
        ref = dose.referenced_plan_uid
        if ref:
            if ref in sop_classes:
                links.append({"type": "dose_of_plan", "from": src, "to": series_ref(ref)})
            else:
                missing.append({**src, "reference": "referenced_rt_plan", "uid": ref,
                                "message": f"dose references plan {ref}, which is not stored "
                                           "in this study"})
    # REG -> Frames of Reference
    registered_onto_sim: set[str] = set()
    reg_sim: set[str] = set()
    for reg in reg_rows:
        src = series_ref(reg.sop_instance_uid)
        hub = reg.registered_frame_of_reference_uid
        for m in matrix_rows:
            if m.sop_instance_uid != reg.sop_instance_uid:
                continue
            source = m.source_frame_of_reference_uid
            links.append({"type": "registers", "from": src,
                          "from_frame_of_reference_uid": source,
                          "to_frame_of_reference_uid": hub,
                          "matrix_type": m.matrix_type, "deformable_grid": m.deformable_grid})
            for uid in (source, hub):
                if uid and uid not in known_fors:
                    missing.append({**src, "reference": "frame_of_reference", "uid": uid,
                                    "message": f"no series of this study is in Frame of "
                                               f"Reference {uid}"})
            if hub in sim_fors and source and source != hub:
                registered_onto_sim.add(source)
                reg_sim.add(reg.sop_instance_uid)
    for entry in missing:  # one entry per distinct problem
        entry.setdefault("uid", None)
    missing = list({orjson.dumps(m, option=orjson.OPT_SORT_KEYS): m for m in missing}.values())

    planning_date = max(plan_dates + [r.date for r in ss_rows if r.date], default=None)
    rt_sops = _rt_sops(ss_rows, plan_rows, dose_rows, reg_rows)
    series_out = []
    for s in series_rows:
        uid = s.series_instance_uid
        modality = s.modality or ""
        sop_list = by_series.get(uid, [])
        stage, reason = _stage(s, modality, own_for.get(uid), sop_list, sop_classes, sim_fors,
                               sim_series, registered_onto_sim, reg_sim, planning_date)
        series_out.append({
            "series_instance_uid": uid,
            "modality": modality,
            "series_number": s.series_number,
            "series_description": s.series_description,
            "series_date": s.series_date or None,
            "frame_of_reference_uid": own_for.get(uid),
            "instance_count": len(sop_list),
            "rt_instances": sorted(sop for sop in sop_list if sop in rt_sops),
            "stage": stage,
            "stage_reason": reason,
        })
    groups: dict[str | None, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for s in series_out:
        groups[s["frame_of_reference_uid"]][s["modality"]].append(s["series_instance_uid"])
    return {
        "study_instance_uid": study,
        "frames_of_reference": [{"frame_of_reference_uid": f, "series_by_modality": dict(m)}
                                for f, m in groups.items()],
        "series": series_out,
        "links": links,
        "missing": missing,
    }


def _stage(s: Series, modality: str, for_uid: str | None, sops: list[str],
           sop_classes: dict[str, str], sim_fors: set[str], sim_series: set[str],
           registered_onto_sim: set[str], reg_sim: set[str], planning_date: str | None
           ) -> tuple[str, str]:
    if modality == "RTRECORD" or any(sop_classes.get(x) in TREATMENT_RECORD_CLASSES
                                     for x in sops):
        return "treatment", "RT treatment record"
    if modality in PLANNING:
        return "planning", f"{modality} object"
    if modality == "REG":
        if any(x in reg_sim for x in sops):
            return "planning", "registers a Frame of Reference onto the simulation one"
        return "unknown", "registration not related to a planning Frame of Reference"
    if modality in NON_IMAGING:
        return "unknown", f"{modality} is not classified"
    date = s.series_date or None
    if planning_date and date and date > planning_date:
        return "follow_up", f"acquired {date}, after planning ({planning_date})"
    if s.series_instance_uid in sim_series:
        return "simulation", "its images are referenced by a structure set"
    if for_uid and for_uid in sim_fors:
        return "simulation", "its Frame of Reference is used by a structure set or plan"
    if for_uid and for_uid in registered_onto_sim:
        return "planning", "registered onto the simulation Frame of Reference"
    return "unknown", "no reference links it to the RT workflow"


def _rt_sops(*row_lists: list) -> set[str]:
    return {r.sop_instance_uid for rows in row_lists for r in rows}


def _rows(session: Session, model: Any, sops: list[str]) -> list:
    out: list = []
    for chunk in _chunks(sops):
        out.extend(session.exec(select(model).where(
            model.sop_instance_uid.in_(chunk))).all())
    return out


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]
