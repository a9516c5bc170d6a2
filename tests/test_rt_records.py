"""RT (Ion) Beams Treatment Records: ``…/rt/record`` and a plan's ``…/rt/plan/progress``.

The records deliver the generator's analytic plan (5 beams, 30 fractions); all objects are in
the CT's Frame of Reference (records carry no geometry that would need a registration).
"""

from __future__ import annotations

import pytest
import requests
from factory import with_meta

from conformance import generate as gen
from conformance.rtrecords import rtrecord_dataset

SEED = 6161


@pytest.fixture(scope="module")
def plan(server) -> dict:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=0)
    plan = gen.rtplan_dataset(rt)
    metersets = {int(b.ReferencedBeamNumber): float(b.BeamMeterset)
                 for b in plan.FractionGroupSequence[0].ReferencedBeamSequence}
    full = {n: (m, "NORMAL") for n, m in metersets.items()}
    # Fraction 1 complete; fraction 2 interrupted on beam 3 (machine), then completed in a
    # second session the same day; fraction 3 in progress (beams 1-2); one Ion record.
    interrupted = {n: (m, "NORMAL") for n, m in metersets.items() if n < 3}
    interrupted[3] = (metersets[3] * 0.4, "MACHINE")
    rest = {3: (metersets[3] * 0.6, "NORMAL"),
            **{n: (m, "NORMAL") for n, m in metersets.items() if n > 3}}
    records = [rtrecord_dataset(rt, 1, full, date="20240610"),
               rtrecord_dataset(rt, 2, interrupted, date="20240611", time="090000",
                                planned=metersets),
               rtrecord_dataset(rt, 2, rest, date="20240611", time="140000",
                                planned=metersets),
               rtrecord_dataset(rt, 3, {1: (metersets[1], "NORMAL"),
                                        2: (metersets[2], "NORMAL")}, date="20240612")]
    ion = rtrecord_dataset(rt, 9, {1: (12.5, "OPERATOR")}, date="20240613", ion=True)
    response = server.stow(*[with_meta(ds) for ds in [plan, *records, ion]])
    assert response.status_code == 200, response.text
    base = f"{server.url}/studies/{rt.study.uid}/series"
    return {"plan": f"{base}/{plan.SeriesInstanceUID}/instances/{plan.SOPInstanceUID}",
            "record": lambda ds: f"{base}/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
            "records": records, "ion": ion, "metersets": metersets,
            "plan_uid": plan.SOPInstanceUID}


def test_record_as_data(plan) -> None:
    body = requests.get(plan["record"](plan["records"][1]) + "/rt/record", timeout=30).json()
    assert body["treatment_date"] == "20240611" and body["treatment_time"] == "090000"
    assert body["referenced_plan_uid"] == plan["plan_uid"]
    assert body["referenced_fraction_group_number"] == 1 and not body["ion"]
    beam3 = next(b for b in body["beams"] if b["referenced_beam_number"] == 3)
    assert beam3["current_fraction_number"] == 2
    assert beam3["termination_status"] == "MACHINE"
    assert beam3["delivered_meterset"] == pytest.approx(plan["metersets"][3] * 0.4, rel=1e-6)
    assert beam3["specified_meterset"] == pytest.approx(plan["metersets"][3], rel=1e-6)
    ion = requests.get(plan["record"](plan["ion"]) + "/rt/record", timeout=30).json()
    assert ion["ion"] and ion["beams"][0]["delivered_meterset"] == 12.5


def test_plan_progress_from_every_record(plan) -> None:
    body = requests.get(plan["plan"] + "/rt/plan/progress", timeout=30).json()
    group = body["fraction_groups"][0]
    assert group["fractions_planned"] == gen.FRACTIONS
    # Fraction 2 counts once both its sessions are in; fraction 3 (2 of 5 beams) has started;
    # the ion record's fraction 9 has an OPERATOR stop on beam 1 only.
    assert group["delivered_fraction_numbers"] == [1, 2]
    assert group["fractions_delivered"] == 2 and group["fractions_started"] == 4
    m = plan["metersets"]
    delivered = {b["beam_number"]: b["meterset_delivered"] for b in group["beams"]}
    assert delivered[3] == pytest.approx(2 * m[3], rel=1e-6)
    assert delivered[1] == pytest.approx(3 * m[1] + 12.5, rel=1e-6)
    assert delivered[5] == pytest.approx(2 * m[5], rel=1e-6)
    beam5 = next(b for b in group["beams"] if b["beam_number"] == 5)
    assert beam5["meterset_planned"] == pytest.approx(gen.FRACTIONS * m[5], rel=1e-9)
    assert beam5["fraction_delivered"] == pytest.approx(2 / gen.FRACTIONS, abs=1e-6)
    assert [r["treatment_date"] for r in body["records"]] == [
        "20240610", "20240611", "20240611", "20240612", "20240613"]


def test_record_resources_of_other_objects_do_not_exist(plan) -> None:
    response = requests.get(plan["plan"] + "/rt/record", timeout=30)
    assert response.status_code == 404 and "RT (Ion) Beams Treatment Record" in response.text
    response = requests.get(plan["record"](plan["records"][0]) + "/rt/plan/progress",
                            timeout=30)
    assert response.status_code == 404
