"""RT Plan and RT Ion Plan parsing (PS3.3 C.8.8.9 - C.8.8.14, C.8.8.25 - C.8.8.26).

Control points (C.8.8.14, Control Point Sequence (300A,0111)): the first control point
carries the full machine state; later control points only encode the values that change
(e.g. C.8.8.14.5 for Beam Limiting Device Position Sequence: "required for the first item,
... required in subsequent items if ... changes"). :class:`ControlPoint` values are therefore
*resolved*: anything absent is inherited from the previous control point, and the attributes
that were actually encoded are listed in ``encoded``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d


class RotationDirection(str, enum.Enum):
    """Gantry/Beam Limiting Device/Patient Support Rotation Direction (C.8.8.14)."""

    CW = "CW"
    CC = "CC"
    NONE = "NONE"


class BeamType(str, enum.Enum):
    """Beam Type (300A,00C4)."""

    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"


@dataclass(frozen=True)
class DoseReference:
    """Dose Reference Sequence item (C.8.8.10); prescriptions live here for TARGET types."""

    number: int | None
    structure_type: str | None  # POINT, VOLUME, COORDINATES, SITE
    dose_reference_type: str | None  # TARGET, ORGAN_AT_RISK
    description: str | None = None
    referenced_roi_number: int | None = None
    point: tuple[float, float, float] | None = None
    target_prescription_dose: float | None = None
    target_minimum_dose: float | None = None
    target_maximum_dose: float | None = None
    delivery_maximum_dose: float | None = None
    organ_at_risk_maximum_dose: float | None = None


@dataclass(frozen=True)
class ReferencedBeam:
    """Referenced Beam Sequence item of a fraction group (C.8.8.13)."""

    beam_number: int | None
    meterset: float | None = None
    beam_dose: float | None = None


@dataclass(frozen=True)
class FractionGroup:
    """Fraction Group Sequence item (C.8.8.13)."""

    number: int | None
    fractions_planned: int | None
    beams: tuple[ReferencedBeam, ...] = ()
    number_of_brachy_application_setups: int | None = None


@dataclass(frozen=True)
class BeamLimitingDevice:
    """(Ion) Beam Limiting Device Sequence item (C.8.8.14)."""

    device_type: str  # X, Y, ASYMX, ASYMY, MLCX, MLCY
    number_of_pairs: int | None = None
    leaf_boundaries: tuple[float, ...] = ()
    source_to_device_distance: float | None = None


@dataclass(frozen=True)
class ControlPoint:
    """A control point with inherited (resolved) machine state."""

    index: int
    cumulative_meterset_weight: float | None
    gantry_angle: float | None
    gantry_rotation_direction: RotationDirection | str | None
    collimator_angle: float | None  # Beam Limiting Device Angle (300A,0120)
    couch_angle: float | None  # Patient Support Angle (300A,0122)
    nominal_energy: float | None
    isocenter: tuple[float, float, float] | None
    jaw_x: tuple[float, float] | None
    jaw_y: tuple[float, float] | None
    mlc_positions: dict[str, tuple[float, ...]] = field(default_factory=dict)
    dose_rate: float | None = None
    encoded: tuple[str, ...] = ()


@dataclass(eq=False)
class Beam:
    """(Ion) Beam Sequence item (C.8.8.14 / C.8.8.25)."""

    number: int | None
    name: str | None
    beam_type: BeamType | str | None
    radiation_type: str | None
    machine: str | None
    primary_dosimeter_unit: str | None = None
    energy: float | None = None
    source_axis_distance: float | None = None
    isocenter: tuple[float, float, float] | None = None
    number_of_control_points: int = 0
    final_cumulative_meterset_weight: float | None = None
    treatment_delivery_type: str | None = None
    beam_limiting_devices: list[BeamLimitingDevice] = field(default_factory=list)
    control_points: list[ControlPoint] = field(default_factory=list)
    ion: bool = False


@dataclass(eq=False)
class Plan:
    """An RT (Ion) Plan instance."""

    sop_instance_uid: str | None
    label: str | None
    name: str | None = None
    date: str | None = None
    time: str | None = None
    geometry: str | None = None  # RT Plan Geometry (300A,000C): PATIENT or TREATMENT_DEVICE
    intent: str | None = None
    frame_of_reference_uid: str | None = None
    referenced_structure_set_uid: str | None = None
    referenced_dose_uids: list[str] = field(default_factory=list)
    dose_references: list[DoseReference] = field(default_factory=list)
    fraction_groups: list[FractionGroup] = field(default_factory=list)
    beams: list[Beam] = field(default_factory=list)
    ion: bool = False
    warnings: list[str] = field(default_factory=list)

    def beam(self, number: int) -> Beam | None:
        return next((b for b in self.beams if b.number == number), None)

    @property
    def prescription_dose(self) -> float | None:
        """Largest Target Prescription Dose among TARGET dose references (Gy)."""
        doses = [r.target_prescription_dose for r in self.dose_references
                 if r.target_prescription_dose is not None]
        return max(doses) if doses else None


def _xyz(values: np.ndarray | None) -> tuple[float, float, float] | None:
    return None if values is None else (float(values[0]), float(values[1]), float(values[2]))


def _enum_or_text(kind: type[enum.Enum], value: str | None):  # noqa: ANN202
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return value


def parse_plan(ds: Dataset) -> Plan:
    """Parse an RTPLAN (or RT Ion Plan) dataset."""
    d.check_kind(ds, [d.RTPLAN_SOP_CLASS, d.RTIONPLAN_SOP_CLASS], ["RTPLAN"], "an RT Plan")
    w: list[str] = []
    ion = "IonBeamSequence" in ds or str(ds.get("SOPClassUID", "")) == d.RTIONPLAN_SOP_CLASS
    plan = Plan(
        sop_instance_uid=d.text(ds, "SOPInstanceUID", w),
        label=d.text(ds, "RTPlanLabel", w),
        name=d.text(ds, "RTPlanName"),
        date=d.text(ds, "RTPlanDate"),
        time=d.text(ds, "RTPlanTime"),
        geometry=d.text(ds, "RTPlanGeometry", w),
        intent=d.text(ds, "PlanIntent"),
        frame_of_reference_uid=d.text(ds, "FrameOfReferenceUID"),
        ion=ion,
        warnings=w,
    )
    ss = d.uids(d.sequence(ds, "ReferencedStructureSetSequence"))
    plan.referenced_structure_set_uid = ss[0] if ss else None
    if plan.geometry == "PATIENT" and plan.referenced_structure_set_uid is None:
        w.append("RT Plan Geometry PATIENT without ReferencedStructureSetSequence (C.8.8.9)")
    plan.referenced_dose_uids = d.uids(d.sequence(ds, "ReferencedDoseSequence"))
    plan.dose_references = [_dose_reference(i) for i in d.sequence(ds, "DoseReferenceSequence")]
    plan.fraction_groups = [_fraction_group(i, w, f"FractionGroupSequence[{k}]: ")
                            for k, i in enumerate(d.sequence(ds, "FractionGroupSequence", w))]
    beam_kw = "IonBeamSequence" if ion else "BeamSequence"
    for k, item in enumerate(d.sequence(ds, beam_kw, w)):
        plan.beams.append(_beam(item, ion, w, f"{beam_kw}[{k}]: "))
    return plan


def _dose_reference(item: Dataset) -> DoseReference:
    return DoseReference(
        number=d.integer(item, "DoseReferenceNumber"),
        structure_type=d.text(item, "DoseReferenceStructureType"),
        dose_reference_type=d.text(item, "DoseReferenceType"),
        description=d.text(item, "DoseReferenceDescription"),
        referenced_roi_number=d.integer(item, "ReferencedROINumber"),
        point=_xyz(d.numbers(item, "DoseReferencePointCoordinates", count=3)),
        target_prescription_dose=d.number(item, "TargetPrescriptionDose"),
        target_minimum_dose=d.number(item, "TargetMinimumDose"),
        target_maximum_dose=d.number(item, "TargetMaximumDose"),
        delivery_maximum_dose=d.number(item, "DeliveryMaximumDose"),
        organ_at_risk_maximum_dose=d.number(item, "OrganAtRiskMaximumDose"),
    )


def _fraction_group(item: Dataset, w: list[str], ctx: str) -> FractionGroup:
    beams = tuple(
        ReferencedBeam(d.integer(b, "ReferencedBeamNumber", w, ctx),
                       d.number(b, "BeamMeterset"), d.number(b, "BeamDose"))
        for b in d.sequence(item, "ReferencedBeamSequence"))
    return FractionGroup(
        number=d.integer(item, "FractionGroupNumber", w, ctx),
        fractions_planned=d.integer(item, "NumberOfFractionsPlanned", w, ctx),
        beams=beams,
        number_of_brachy_application_setups=d.integer(item, "NumberOfBrachyApplicationSetups"),
    )


def _beam(item: Dataset, ion: bool, w: list[str], ctx: str) -> Beam:
    sad = d.number(item, "SourceAxisDistance")
    if ion and sad is None:
        vsad = d.numbers(item, "VirtualSourceAxisDistances")
        sad = float(vsad[0]) if vsad is not None else None
    beam = Beam(
        number=d.integer(item, "BeamNumber", w, ctx),
        name=d.text(item, "BeamName"),
        beam_type=_enum_or_text(BeamType, d.text(item, "BeamType", w, ctx)),
        radiation_type=d.text(item, "RadiationType", w, ctx),
        machine=d.text(item, "TreatmentMachineName"),
        primary_dosimeter_unit=d.text(item, "PrimaryDosimeterUnit"),
        source_axis_distance=sad,
        final_cumulative_meterset_weight=d.number(item, "FinalCumulativeMetersetWeight"),
        treatment_delivery_type=d.text(item, "TreatmentDeliveryType"),
        ion=ion,
    )
    bld_kw = "IonBeamLimitingDeviceSequence" if ion else "BeamLimitingDeviceSequence"
    for dev in d.sequence(item, bld_kw):
        bounds = d.numbers(dev, "LeafPositionBoundaries")
        beam.beam_limiting_devices.append(BeamLimitingDevice(
            device_type=d.text(dev, "RTBeamLimitingDeviceType", w, ctx) or "?",
            number_of_pairs=d.integer(dev, "NumberOfLeafJawPairs"),
            leaf_boundaries=tuple(float(v) for v in bounds) if bounds is not None else (),
            source_to_device_distance=d.number(dev, "SourceToBeamLimitingDeviceDistance"),
        ))
    cp_kw = "IonControlPointSequence" if ion else "ControlPointSequence"
    beam.control_points = _control_points(d.sequence(item, cp_kw, w, ctx), w, ctx)
    declared = d.integer(item, "NumberOfControlPoints", w, ctx)
    beam.number_of_control_points = len(beam.control_points)
    if declared is not None and declared != beam.number_of_control_points:
        w.append(f"{ctx}NumberOfControlPoints {declared} != {beam.number_of_control_points} items")
    if beam.control_points:
        first = beam.control_points[0]
        beam.energy, beam.isocenter = first.nominal_energy, first.isocenter
        last = beam.control_points[-1].cumulative_meterset_weight
        fcmw = beam.final_cumulative_meterset_weight
        if fcmw is not None and last is not None and abs(last - fcmw) > 1e-6 * max(1.0, fcmw):
            w.append(f"{ctx}last CumulativeMetersetWeight {last} != "
                     f"FinalCumulativeMetersetWeight {fcmw}")
    return beam


_INHERITED = {
    "GantryAngle": "gantry_angle",
    "GantryRotationDirection": "gantry_rotation_direction",
    "BeamLimitingDeviceAngle": "collimator_angle",
    "PatientSupportAngle": "couch_angle",
    "NominalBeamEnergy": "nominal_energy",
    "DoseRateSet": "dose_rate",
}


def _control_points(items: list[Dataset], w: list[str], ctx: str) -> list[ControlPoint]:
    state: dict = {v: None for v in _INHERITED.values()}
    state.update(isocenter=None, jaw_x=None, jaw_y=None, mlc_positions={})
    out: list[ControlPoint] = []
    for k, item in enumerate(items):
        c = f"{ctx}ControlPoint[{k}]: "
        encoded: list[str] = []
        for keyword, name in _INHERITED.items():
            if keyword in item and item.get(keyword) not in (None, ""):
                encoded.append(keyword)
                state[name] = (_enum_or_text(RotationDirection, d.text(item, keyword))
                               if keyword == "GantryRotationDirection"
                               else d.number(item, keyword, w, c))
        iso = d.numbers(item, "IsocenterPosition", count=3)
        if iso is not None:
            encoded.append("IsocenterPosition")
            state["isocenter"] = _xyz(iso)
        bldp = "BeamLimitingDevicePositionSequence"
        for pos in d.sequence(item, bldp):
            kind = d.text(pos, "RTBeamLimitingDeviceType", w, c)
            values = d.numbers(pos, "LeafJawPositions", w, c)
            if kind is None or values is None:
                continue
            encoded.append(f"{bldp}:{kind}")
            if kind in ("X", "ASYMX", "Y", "ASYMY"):
                if values.size != 2:
                    w.append(f"{c}{kind} jaw has {values.size} positions")
                    continue
                state["jaw_x" if kind.endswith("X") else "jaw_y"] = (float(values[0]),
                                                                      float(values[1]))
            else:
                state["mlc_positions"] = {**state["mlc_positions"],
                                          kind: tuple(float(v) for v in values)}
        index = d.integer(item, "ControlPointIndex", w, c)
        if index is not None and index != k:
            w.append(f"{c}ControlPointIndex {index} out of order")
        cmw = d.number(item, "CumulativeMetersetWeight")
        if k == 0:
            missing = [kw for kw in ("GantryAngle", "NominalBeamEnergy") if kw not in encoded]
            if missing:
                w.append(f"{c}first control point lacks {', '.join(missing)}")
        out.append(ControlPoint(
            index=index if index is not None else k,
            cumulative_meterset_weight=cmw,
            encoded=tuple(encoded),
            **{k2: (dict(v) if isinstance(v, dict) else v) for k2, v in state.items()},
        ))
    return out
