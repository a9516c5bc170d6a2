"""RT Ion Plan through ``…/rt/plan``: marked ion, with snouts, range shifters and spot maps.

The generator's photon plan turned into a proton plan (same Frame of Reference, beams and
fraction group): Ion Beam / Ion Control Point sequences, a snout and a range shifter per beam,
a 3-spot map per control point.
"""

from __future__ import annotations

import pytest
import requests
from factory import with_meta
from pydicom.uid import UID

from conformance import generate as gen

SEED = 8383
RT_ION_PLAN = UID("1.2.840.10008.5.1.4.1.1.481.8")
SPOTS = [-5.0, 0.0, 0.0, 5.0, 5.0, -5.0]
WEIGHTS = [0.1, 0.2, 0.3]


def ion_plan(rt: gen.RtStudy):
    ds = gen.rtplan_dataset(rt)
    ds.SOPClassUID = RT_ION_PLAN
    for beam in ds.BeamSequence:
        beam.RadiationType, beam.ScanMode = "PROTON", "MODULATED"
        del beam.SourceAxisDistance
        beam.VirtualSourceAxisDistances = [2000, 1800]
        beam.IonBeamLimitingDeviceSequence = beam.get("BeamLimitingDeviceSequence", [])
        if "BeamLimitingDeviceSequence" in beam:
            del beam.BeamLimitingDeviceSequence
        beam.NumberOfRangeShifters = 1
        beam.RangeShifterSequence = [gen._item(RangeShifterNumber=1, RangeShifterID="RS40",
                                               RangeShifterType="BINARY")]
        beam.SnoutSequence = [gen._item(SnoutID="SNOUT-M")]
        for i, cp in enumerate(beam.ControlPointSequence):
            cp.NominalBeamEnergy = 150 + i
            cp.SnoutPosition = 300.0
            cp.ScanSpotTuneID = "3.0"
            cp.NumberOfScanSpotPositions = 3
            cp.ScanSpotPositionMap = SPOTS
            cp.ScanSpotMetersetWeights = WEIGHTS
            cp.RangeShifterSettingsSequence = [gen._item(
                ReferencedRangeShifterNumber=1, RangeShifterSetting="IN",
                IsocenterToRangeShifterDistance=250.0, RangeShifterWaterEquivalentThickness=40)]
        beam.IonControlPointSequence = beam.ControlPointSequence
        del beam.ControlPointSequence
    ds.IonBeamSequence = ds.BeamSequence
    del ds.BeamSequence
    return ds


@pytest.fixture(scope="module")
def plan_url(server) -> str:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=0)
    ds = ion_plan(rt)
    response = server.stow(with_meta(ds))
    assert response.status_code == 200, response.text
    return (f"{server.url}/studies/{rt.study.uid}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/rt/plan")


def test_ion_plan_is_marked_and_carries_its_ion_beams(plan_url) -> None:
    body = requests.get(plan_url, timeout=30).json()
    assert body["ion"] is True
    beam = body["beams"][0]
    assert beam["radiation_type"] == "PROTON" and beam["source_axis_distance"] == 2000
    assert beam["ion"]["scan_mode"] == "MODULATED"
    assert beam["ion"]["virtual_source_axis_distances"] == [2000, 1800]
    assert beam["ion"]["snouts"][0]["id"] == "SNOUT-M"
    assert beam["ion"]["range_shifters"] == [{"number": 1, "id": "RS40", "type": "BINARY",
                                              "accessory_code": None}]
    cp = beam["control_points"][1]["ion"]
    assert cp["nominal_beam_energy"] == 151 and cp["snout_position"] == 300
    assert cp["scan_spot_positions"] == [[-5, 0], [0, 5], [5, -5]]
    assert cp["scan_spot_meterset_weights"] == pytest.approx(WEIGHTS)  # FL: float32
    assert cp["range_shifter_settings"][0]["water_equivalent_thickness"] == 40
    short = requests.get(plan_url, params={"control_points": "false"}, timeout=30).json()
    assert "control_points" not in short["beams"][0]
    assert short["beams"][0]["ion"]["range_shifters"][0]["id"] == "RS40"
