"""RT (Ion) Beams Treatment Records of the generator's analytic plan (PS3.3 A.29, A.50).

``rtrecord_dataset(rt, fraction, delivered)`` is one treatment session of ``rt``'s RT Plan:
fraction ``fraction`` with, per beam number, the delivered meterset and the Treatment
Termination Status (NORMAL for a beam delivered to its end).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset
from pydicom.uid import UID

from conformance import generate as gen

RT_BEAMS_TREATMENT_RECORD = UID("1.2.840.10008.5.1.4.1.1.481.4")
RT_ION_BEAMS_TREATMENT_RECORD = UID("1.2.840.10008.5.1.4.1.1.481.9")


def rtrecord_dataset(rt: gen.RtStudy, fraction: int,
                     delivered: Mapping[int, tuple[float, str]], *, date: str = "20240610",
                     time: str = "090000", ion: bool = False, planned: Mapping[int, float]
                     | None = None) -> Dataset:
    sop_class = RT_ION_BEAMS_TREATMENT_RECORD if ion else RT_BEAMS_TREATMENT_RECORD
    study = rt.study
    ds = gen._new_instance(sop_class, rt.instance_uid("rtrecord", fraction * 100 + len(date)
                                                      + int(time[:2])), rt.patient, study)
    gen._set_series(ds, "RTRECORD", rt.series_uid("rtrecord"), 7, "Treatment records", study)
    ds.FrameOfReferenceUID = rt.for_ct
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = fraction
    ds.TreatmentDate, ds.TreatmentTime = date, time
    ds.ReferencedRTPlanSequence = [gen._item(
        ReferencedSOPClassUID=gen.RT_PLAN_STORAGE,
        ReferencedSOPInstanceUID=rt.instance_uid("rtplan"), ReferencedFractionGroupNumber=1)]
    ds.NumberOfFractionsPlanned = gen.FRACTIONS
    ds.PrimaryDosimeterUnit = "NP" if ion else "MU"
    items = []
    for number, (meterset, status) in delivered.items():
        items.append(gen._item(
            ReferencedBeamNumber=number, BeamName=f"BEAM{number}", BeamType="STATIC",
            RadiationType="PROTON" if ion else "PHOTON", TreatmentDeliveryType="TREATMENT",
            CurrentFractionNumber=fraction, TreatmentTerminationStatus=status,
            TreatmentVerificationStatus="VERIFIED",
            SpecifiedPrimaryMeterset=gen._ds((planned or {}).get(number, meterset)),
            DeliveredPrimaryMeterset=gen._ds(meterset), NumberOfControlPoints=0))
    setattr(ds, "TreatmentSessionIonBeamSequence" if ion else "TreatmentSessionBeamSequence",
            items)
    return ds
