"""The study RT graph (GET /studies/{study}/rt), end to end on both backends."""

from __future__ import annotations

import factory
import pytest
import requests
from test_rt_routes import with_meta

from conformance import generate as gen

SEED = 4343


@pytest.fixture(scope="module")
def graph(server) -> dict:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=4)
    ct = gen.ct_series_datasets(rt)
    stored_ct = ct[:3]  # the last contour image is never stored → reported missing
    plan = gen.rtplan_dataset(rt)
    orphan_plan = gen.rtplan_dataset(rt)
    orphan_plan.SOPInstanceUID = factory.new_uid()
    orphan_plan.SeriesInstanceUID = factory.new_uid()
    orphan_plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = "1.2.3.999"
    follow_up = factory.image(study=rt.study.uid, patient_id=rt.patient.patient_id,
                              patient_name=rt.patient.name, series_number=9)
    follow_up.SeriesDate = "20250101"
    datasets = [*stored_ct, *gen.mr_series_datasets(rt), gen.rtstruct_dataset(rt), plan,
                gen.rtdose_dataset(rt), gen.reg_dataset(rt), orphan_plan]
    for ds in datasets:
        with_meta(ds)
    response = server.stow(*datasets, follow_up)
    assert response.status_code == 200, response.text
    truth = gen.ground_truth(rt)
    body = requests.get(f"{server.url}/studies/{rt.study.uid}/rt", timeout=30)
    assert body.status_code == 200, body.text
    return {"graph": body.json(), "truth": truth, "orphan": orphan_plan,
            "follow_up": follow_up.SeriesInstanceUID, "missing_ct": ct[3].SOPInstanceUID}


def test_series_are_grouped_by_frame_of_reference(graph: dict) -> None:
    truth = graph["truth"]
    groups = {g["frame_of_reference_uid"]: g["series_by_modality"]
              for g in graph["graph"]["frames_of_reference"]}
    series = truth["series_instance_uids"]
    ct_group = groups[truth["frame_of_reference_uids"]["FOR_CT"]]
    assert ct_group["CT"] == [series["ct"]]
    assert ct_group["RTSTRUCT"] == [series["rtstruct"]]
    assert series["rtplan"] in ct_group["RTPLAN"] and ct_group["RTDOSE"] == [series["rtdose"]]
    assert groups[truth["frame_of_reference_uids"]["FOR_MR"]]["MR"] == [series["mr"]]


def test_links(graph: dict) -> None:
    truth = graph["truth"]
    series, sops = truth["series_instance_uids"], truth["sop_instance_uids"]
    links = graph["graph"]["links"]
    by_type: dict[str, list] = {}
    for link in links:
        by_type.setdefault(link["type"], []).append(link)
    (structures,) = by_type["structures_on_images"]
    assert structures["from"]["sop_instance_uid"] == sops["rtstruct"]
    assert structures["to"]["series_instance_uid"] == series["ct"]
    assert structures["via"] == "referenced_series"
    (uses,) = by_type["plan_uses_structures"]
    assert uses["from"]["sop_instance_uid"] == sops["rtplan"]
    assert uses["to"]["sop_instance_uid"] == sops["rtstruct"]
    (dose,) = by_type["dose_of_plan"]
    assert dose["from"]["sop_instance_uid"] == sops["rtdose"]
    assert dose["to"] == {"series_instance_uid": series["rtplan"],
                          "sop_instance_uid": sops["rtplan"]}
    registers = {(r["from_frame_of_reference_uid"], r["to_frame_of_reference_uid"])
                 for r in by_type["registers"]}
    fors = truth["frame_of_reference_uids"]
    assert (fors["FOR_MR"], fors["FOR_CT"]) in registers


def test_missing_references_are_reported_not_guessed(graph: dict) -> None:
    missing = graph["graph"]["missing"]
    kinds = {(m["reference"], m["sop_instance_uid"]) for m in missing}
    assert ("referenced_structure_set", graph["orphan"].SOPInstanceUID) in kinds
    contour = next(m for m in missing if m["reference"] == "contour_image")
    assert contour["uids"] == [graph["missing_ct"]]
    links = graph["graph"]["links"]
    assert not any(link["from"].get("sop_instance_uid") == graph["orphan"].SOPInstanceUID
                   and link["type"] == "plan_uses_structures" for link in links)


def test_workflow_stages(graph: dict) -> None:
    series = graph["truth"]["series_instance_uids"]
    stages = {s["series_instance_uid"]: s["stage"] for s in graph["graph"]["series"]}
    assert stages[series["ct"]] == "simulation"
    for role in ("rtstruct", "rtplan", "rtdose", "reg"):
        assert stages[series[role]] == "planning", role
    assert stages[series["mr"]] == "planning"  # registered onto the simulation FoR
    assert stages[graph["follow_up"]] == "follow_up"
    assert all(s["stage_reason"] for s in graph["graph"]["series"])
