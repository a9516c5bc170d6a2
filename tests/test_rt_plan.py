"""RT Plan parsing, control-point inheritance."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb.rt import NotAnRtObject
from dicomweb.rt.plan import RotationDirection, parse_plan
from dicomweb.rt.serialize import plan_to_json


def test_pydicom_rtplan() -> None:
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    plan = parse_plan(ds)
    assert (plan.label, plan.name, plan.date, plan.geometry) == ("Plan1", "Plan1", "20030903",
                                                                 "PATIENT")
    assert plan.referenced_structure_set_uid == "1.2.333.444.55.6.7777.88888"
    assert plan.prescription_dose == pytest.approx(30.826203)
    fg = plan.fraction_groups[0]
    assert fg.fractions_planned == 30
    assert fg.beams[0].meterset == pytest.approx(116.0036697)
    assert fg.beams[0].beam_dose == pytest.approx(1.0275401)
    beam = plan.beams[0]
    assert (beam.name, beam.machine, beam.radiation_type) == ("Field 1", "unit001", "PHOTON")
    assert beam.energy == 6.0 and beam.source_axis_distance == 1000.0
    assert beam.number_of_control_points == 2
    assert beam.final_cumulative_meterset_weight == 1.0
    assert [d.device_type for d in beam.beam_limiting_devices] == ["X", "Y"]
    cp1 = beam.control_points[1]
    assert cp1.encoded == () and cp1.gantry_angle == 0.0 and cp1.jaw_x == (-100.0, 100.0)
    assert cp1.cumulative_meterset_weight == 1.0
    assert plan.warnings == []
    js = plan_to_json(plan)
    assert js["beams"][0]["control_points"][1]["jaw_y"] == [-100.0, 100.0]


def test_pydicom_truncated_rtplan_warns() -> None:
    plan = parse_plan(pydicom.dcmread(get_testdata_file("rtplan_truncated.dcm")))
    assert plan.label == "Plan1" and plan.warnings


def _cp(index: int, **values) -> Dataset:
    cp = Dataset()
    cp.ControlPointIndex = index
    for k, v in values.items():
        if k == "devices":
            items = []
            for kind, positions in v.items():
                d = Dataset()
                d.RTBeamLimitingDeviceType = kind
                d.LeafJawPositions = positions
                items.append(d)
            cp.BeamLimitingDevicePositionSequence = Sequence(items)
        else:
            setattr(cp, k, v)
    return cp


def arc_plan() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ds.SOPInstanceUID = "1.2.3.4.300"
    ds.RTPlanLabel = "VMAT"
    ds.RTPlanGeometry = "PATIENT"
    ss = Dataset()
    ss.ReferencedSOPInstanceUID = "1.2.3.4.100"
    ds.ReferencedStructureSetSequence = Sequence([ss])
    beam = Dataset()
    beam.BeamNumber = 1
    beam.BeamName = "Arc1"
    beam.BeamType = "DYNAMIC"
    beam.RadiationType = "PHOTON"
    beam.TreatmentMachineName = "Linac"
    beam.SourceAxisDistance = 1000
    mlc = Dataset()
    mlc.RTBeamLimitingDeviceType = "MLCX"
    mlc.NumberOfLeafJawPairs = 3
    mlc.LeafPositionBoundaries = [-15, -5, 5, 15]
    beam.BeamLimitingDeviceSequence = Sequence([mlc])
    beam.NumberOfControlPoints = 3
    beam.FinalCumulativeMetersetWeight = 1
    beam.ControlPointSequence = Sequence([
        _cp(0, NominalBeamEnergy=6, GantryAngle=181, GantryRotationDirection="CW",
            BeamLimitingDeviceAngle=30, PatientSupportAngle=0,
            IsocenterPosition=[1, 2, 3], CumulativeMetersetWeight=0,
            devices={"ASYMX": [-50, 50], "ASYMY": [-60, 60], "MLCX": [-1, -2, -3, 1, 2, 3]}),
        _cp(1, GantryAngle=270, CumulativeMetersetWeight=0.5,
            devices={"MLCX": [-4, -5, -6, 4, 5, 6]}),
        _cp(2, GantryAngle=359, CumulativeMetersetWeight=1, devices={"ASYMY": [-40, 40]}),
    ])
    ds.BeamSequence = Sequence([beam])
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 5
    rb = Dataset()
    rb.ReferencedBeamNumber = 1
    rb.BeamMeterset = 400
    fg.ReferencedBeamSequence = Sequence([rb])
    ds.FractionGroupSequence = Sequence([fg])
    return ds


def test_control_points_inherit_values() -> None:
    plan = parse_plan(arc_plan())
    beam = plan.beam(1)
    assert beam.energy == 6 and beam.isocenter == (1, 2, 3)
    assert beam.beam_limiting_devices[0].leaf_boundaries == (-15, -5, 5, 15)
    cps = beam.control_points
    assert [c.gantry_angle for c in cps] == [181, 270, 359]
    assert all(c.gantry_rotation_direction is RotationDirection.CW for c in cps)
    assert [c.collimator_angle for c in cps] == [30, 30, 30]
    assert [c.nominal_energy for c in cps] == [6, 6, 6]
    assert cps[2].isocenter == (1, 2, 3)
    assert [c.jaw_x for c in cps] == [(-50, 50)] * 3
    assert [c.jaw_y for c in cps] == [(-60, 60), (-60, 60), (-40, 40)]
    assert cps[1].mlc_positions["MLCX"] == (-4, -5, -6, 4, 5, 6)
    assert cps[2].mlc_positions["MLCX"] == (-4, -5, -6, 4, 5, 6)
    assert cps[0].mlc_positions["MLCX"] == (-1, -2, -3, 1, 2, 3)
    assert "GantryAngle" in cps[2].encoded and "BeamLimitingDeviceAngle" not in cps[2].encoded
    assert plan.fraction_groups[0].beams[0].meterset == 400
    assert plan.prescription_dose is None


def test_missing_sequences_warn_not_raise() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    plan = parse_plan(ds)
    assert plan.beams == [] and plan.warnings
    ds = arc_plan()
    del ds.BeamSequence[0].ControlPointSequence[0].GantryAngle
    del ds.FractionGroupSequence[0].NumberOfFractionsPlanned
    del ds.ReferencedStructureSetSequence
    plan = parse_plan(ds)
    text = " ".join(plan.warnings)
    assert "GantryAngle" in text and "NumberOfFractionsPlanned" in text
    assert "ReferencedStructureSetSequence" in text
    other = Dataset()
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(NotAnRtObject):
        parse_plan(other)


def test_ion_plan() -> None:
    ds = arc_plan()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.8"
    beam = ds.BeamSequence[0]
    beam.RadiationType = "PROTON"
    del beam.SourceAxisDistance
    beam.VirtualSourceAxisDistances = [2000, 1800]
    beam.IonBeamLimitingDeviceSequence = beam.BeamLimitingDeviceSequence
    del beam.BeamLimitingDeviceSequence
    beam.IonControlPointSequence = beam.ControlPointSequence
    del beam.ControlPointSequence
    ds.IonBeamSequence = ds.BeamSequence
    del ds.BeamSequence
    plan = parse_plan(ds)
    assert plan.ion and plan.beams[0].source_axis_distance == 2000
    assert plan.beams[0].control_points[2].gantry_angle == 359
