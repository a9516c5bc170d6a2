"""RT Beams and RT Ion Beams Treatment Records (RTRECORD; PS3.3 A.29, A.50): one treatment
session each, indexed at ingest, and a plan's delivery progress from every record of it.

A record holds the session's Treatment Date/Time (RT General Treatment Record, C.8.8.17), the
plan it delivers (Referenced RT Plan Sequence, its Referenced Fraction Group Number) and, per
beam (Treatment Session (Ion) Beam Sequence, C.8.8.21 / C.8.8.27), the Referenced Beam
Number, the Current Fraction Number, the Specified and Delivered Primary Meterset and the
Treatment Termination Status (NORMAL, OPERATOR, MACHINE, UNKNOWN) and Code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from sqlmodel import Field, Session, SQLModel

from . import _dicom as d
from ._dicom import RECORD_SOP_CLASSES, RTIONRECORD_SOP_CLASS


@dataclass
class BeamSession:
    """One Treatment Session (Ion) Beam Sequence item."""

    beam_number: int | None
    beam_name: str | None
    fraction_number: int | None
    delivery_type: str | None
    termination_status: str | None
    termination_code: str | None
    verification_status: str | None
    specified_meterset: float | None
    delivered_meterset: float | None


@dataclass
class TreatmentRecord:
    sop_instance_uid: str | None
    ion: bool
    date: str | None
    time: str | None
    plan_uid: str | None
    fraction_group_number: int | None
    fractions_planned: int | None
    beams: list[BeamSession] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_record(ds: Dataset) -> TreatmentRecord:
    d.check_kind(ds, RECORD_SOP_CLASSES, ["RTRECORD"], "an RT Beams Treatment Record")
    w: list[str] = []
    ion = (str(ds.get("SOPClassUID", "")) == RTIONRECORD_SOP_CLASS
           or "TreatmentSessionIonBeamSequence" in ds)
    plans = d.sequence(ds, "ReferencedRTPlanSequence", w)
    plan = plans[0] if plans else Dataset()
    record = TreatmentRecord(
        sop_instance_uid=d.text(ds, "SOPInstanceUID"), ion=ion,
        date=d.text(ds, "TreatmentDate", w), time=d.text(ds, "TreatmentTime", w),
        plan_uid=d.text(plan, "ReferencedSOPInstanceUID", w, "ReferencedRTPlanSequence: "),
        fraction_group_number=d.integer(plan, "ReferencedFractionGroupNumber"),
        fractions_planned=d.integer(ds, "NumberOfFractionsPlanned"), warnings=w)
    keyword = "TreatmentSessionIonBeamSequence" if ion else "TreatmentSessionBeamSequence"
    for i, item in enumerate(d.sequence(ds, keyword, w)):
        ctx = f"{keyword}[{i}]: "
        record.beams.append(BeamSession(
            beam_number=d.integer(item, "ReferencedBeamNumber", w, ctx),
            beam_name=d.text(item, "BeamName"),
            fraction_number=d.integer(item, "CurrentFractionNumber", w, ctx),
            delivery_type=d.text(item, "TreatmentDeliveryType"),
            termination_status=d.text(item, "TreatmentTerminationStatus", w, ctx),
            termination_code=d.text(item, "TreatmentTerminationCode"),
            verification_status=d.text(item, "TreatmentVerificationStatus"),
            specified_meterset=d.number(item, "SpecifiedPrimaryMeterset"),
            delivered_meterset=d.number(item, "DeliveredPrimaryMeterset", w, ctx)))
    return record


class RtTreatmentRecordRow(SQLModel, table=True):
    __tablename__ = "rt_treatment_records"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    series_instance_uid: str | None = None
    ion: bool = False
    treatment_date: str | None = None
    treatment_time: str | None = None
    referenced_plan_uid: str | None = Field(default=None, index=True)
    referenced_fraction_group_number: int | None = None
    fractions_planned: int | None = None
    warnings: str = "[]"


class RtRecordBeamRow(SQLModel, table=True):
    __tablename__ = "rt_treatment_record_beams"
    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True)
    referenced_beam_number: int | None = None
    beam_name: str | None = None
    current_fraction_number: int | None = None
    treatment_delivery_type: str | None = None
    termination_status: str | None = None
    termination_code: str | None = None
    verification_status: str | None = None
    specified_meterset: float | None = None
    delivered_meterset: float | None = None


RECORD_ROW_MODELS = (RtTreatmentRecordRow, RtRecordBeamRow)


def index_record(session: Session, ds: Dataset, uid: str, series: str | None,
                 dumps: object) -> list[str]:
    record = parse_record(ds)
    session.add(RtTreatmentRecordRow(
        sop_instance_uid=uid, series_instance_uid=series, ion=record.ion,
        treatment_date=record.date, treatment_time=record.time,
        referenced_plan_uid=record.plan_uid,
        referenced_fraction_group_number=record.fraction_group_number,
        fractions_planned=record.fractions_planned,
        warnings=dumps(record.warnings)))  # type: ignore[operator]
    for b in record.beams:
        session.add(RtRecordBeamRow(
            sop_instance_uid=uid, referenced_beam_number=b.beam_number, beam_name=b.beam_name,
            current_fraction_number=b.fraction_number, treatment_delivery_type=b.delivery_type,
            termination_status=b.termination_status, termination_code=b.termination_code,
            verification_status=b.verification_status,
            specified_meterset=b.specified_meterset, delivered_meterset=b.delivered_meterset))
    return list(record.warnings)
