"""Deterministic synthetic DICOM data with analytic ground truth.

``python -m conformance.generate OUT_DIR [--small-studies N] [--mr-slices N]
[--ct-slices N] [--seed S] [--hard-cases] [--dvh-set]`` writes:

* ``OUT_DIR/rt/``: one radiotherapy study (CT, MR, RTSTRUCT, RTPLAN, RTDOSE, REG) of an
  analytic phantom (see :mod:`conformance.phantoms`);
* ``OUT_DIR/small/``: many tiny studies with varied demographics for query tests;
* ``OUT_DIR/dvh/`` (``--dvh-set``): the analytic DVH test set of :mod:`conformance.dvhset`
  (RTSTRUCT per contour spacing, RTDOSE per grid and field, ``truth.json``);
* ``OUT_DIR/ground_truth.json``: UIDs by role and analytic geometry / dose / DVH values.

All UIDs are UUID-derived (``2.25.``, PS3.5 B.2) from a fixed namespace, the seed and the
role of the object, so reruns with the same seed give identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from conformance import phantoms

UID_NAMESPACE = uuid.UUID("6f1c1e0c-3b4e-5c1a-9d0e-64696367776d")
IMPLEMENTATION_CLASS_UID = "2.25.230385929738238516829340236474542342361"
IMPLEMENTATION_VERSION = "DICOMWEB_GEN_1"
MANUFACTURER = "dicomweb-conformance"

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
MG_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.2")
US_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
NM_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.20")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")
RT_STRUCT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")
RT_PLAN_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.5")
RT_DOSE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.2")
SPATIAL_REGISTRATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.1")
DETACHED_STUDY_MANAGEMENT = UID("1.2.840.10008.3.1.2.3.1")  # RTReferencedStudySequence

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # rows along +y (posterior), columns along -z

# --- RT study geometry ---------------------------------------------------------------
CT_SIZE = 512
CT_PIXEL_MM = 500.0 / CT_SIZE  # 0.9765625 mm, 500 mm field of view
CT_SLICE_MM = 3.0
MR_SIZE = 256
MR_PIXEL_MM = 1.0
MR_SLICE_MM = 0.5
DOSE_PIXEL_MM = 2.5
DOSE_COLUMNS = 128
DOSE_ROWS = 128
DOSE_FRAMES = 49
DOSE_GRID_SCALING = {32: 1e-5, 16: 1.1e-3}  # Gy per stored unit, by BitsAllocated
CIRCLE_POINTS = 128
MLC_BOUNDARIES = (
    [-200.0 + 10.0 * i for i in range(10)]
    + [-100.0 + 5.0 * i for i in range(40)]
    + [100.0 + 10.0 * i for i in range(11)]
)  # 60 leaf pairs: 10 x 10 mm, 40 x 5 mm, 10 x 10 mm
FIELD_RADIUS_MM = phantoms.SPHERE_RADIUS + 5.0
PRESCRIPTION_GY = 60.0
FRACTIONS = 30
GANTRY_ANGLES = (0.0, 72.0, 144.0, 216.0, 288.0)


def make_uid(seed: int, *parts: object) -> UID:
    """Deterministic UUID-derived UID for (seed, parts)."""
    name = "/".join(str(p) for p in (seed, *parts))
    return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}")


def write(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (explicit VR little endian)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def _ds(v: float) -> DSfloat:
    """A DS value with as many digits as fit in the 16 characters of the VR."""
    v = float(v) + 0.0  # no "-0"
    text = next(t for t in (f"{v:.{d}g}" for d in range(16, 0, -1)) if len(t) <= 16)
    return DSfloat(text)


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


# --- Common modules --------------------------------------------------------------------
@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str
    charset: str = "ISO_IR 100"


@dataclass(frozen=True)
class Study:
    uid: str
    date: str
    time: str
    study_id: str
    accession: str
    description: str
    referring_physician: str


def _new_instance(sop_class: UID, sop_instance: UID, patient: Patient, study: Study) -> Dataset:
    """Dataset with SOP Common, Patient, General Study and General Equipment modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = study.referring_physician
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "conformance.generate"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    ds.InstitutionName = "Conformance Hospital"
    ds.StationName = "GEN01"
    return ds


def _set_series(
    ds: Dataset, modality: str, series_uid: str, number: int, description: str, study: Study
) -> None:
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = study.date
    ds.SeriesTime = study.time


def _set_content_time(ds: Dataset, study: Study) -> None:
    ds.ContentDate = study.date
    ds.ContentTime = study.time


def _set_mono_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int | None = None) -> None:
    """Image Pixel module for unsigned MONOCHROME2 data (uint8 / uint16 / uint32)."""
    bits = pixels.dtype.itemsize * 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(f"<u{pixels.dtype.itemsize}").tobytes()


def _set_image_plane(
    ds: Dataset,
    position: Sequence[float],
    orientation: Sequence[float],
    spacing: float,
    thickness: float,
) -> None:
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.SliceThickness = _ds(thickness)


# --- RT study context --------------------------------------------------------------------
@dataclass
class RtStudy:
    """UIDs and geometry of the radiotherapy study; every builder derives from this."""

    seed: int = 0
    ct_slices: int = 60
    mr_slices: int = 400
    patient: Patient = field(
        default_factory=lambda: Patient("RT^Phantom^Analytic", "RTPHANTOM01", "19700101", "O")
    )

    def uid(self, *parts: object) -> UID:
        return make_uid(self.seed, "rt", *parts)

    @property
    def study(self) -> Study:
        return Study(
            uid=self.uid("study"),
            date="20240315",
            time="093000",
            study_id="RT1",
            accession="RTACC0001",
            description="Analytic RT phantom",
            referring_physician="Curie^Marie",
        )

    @property
    def for_ct(self) -> UID:
        return self.uid("for", "ct")

    @property
    def for_mr(self) -> UID:
        return self.uid("for", "mr")

    def series_uid(self, role: str) -> UID:
        return self.uid("series", role)

    def instance_uid(self, role: str, index: int = 0) -> UID:
        return self.uid("instance", role, index)

    def ct_z(self, index: int) -> float:
        return CT_SLICE_MM * (index - self.ct_slices // 2)

    @property
    def ct_z_extent(self) -> tuple[float, float]:
        half = CT_SLICE_MM / 2
        return self.ct_z(0) - half, self.ct_z(self.ct_slices - 1) + half

    def ct_index_at(self, z: float) -> int | None:
        index = round(z / CT_SLICE_MM) + self.ct_slices // 2
        in_range = 0 <= index < self.ct_slices and abs(self.ct_z(index) - z) < 1e-6
        return index if in_range else None

    def mr_z(self, index: int) -> float:
        centre_z = phantoms.sphere_centre_mr()[2]
        return round(centre_z + (index - (self.mr_slices - 1) / 2) * MR_SLICE_MM, 4)


def _ct_origin_xy() -> float:
    return -250.0 + CT_PIXEL_MM / 2


def ct_series_datasets(rt: RtStudy) -> list[Dataset]:
    """Axial CT slices of the phantom (uint16, rescale intercept -1024)."""
    coords = _ct_origin_xy() + CT_PIXEL_MM * np.arange(CT_SIZE)
    x, y = coords[np.newaxis, :], coords[:, np.newaxis]
    study = rt.study
    slices = []
    for index in range(rt.ct_slices):
        z = rt.ct_z(index)
        ds = _new_instance(CT_IMAGE_STORAGE, rt.instance_uid("ct", index), rt.patient, study)
        _set_series(ds, "CT", rt.series_uid("ct"), 1, "Planning CT", study)
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = rt.for_ct
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        _set_content_time(ds, study)
        ds.AcquisitionDate, ds.AcquisitionTime = study.date, study.time
        _set_image_plane(ds, [_ct_origin_xy(), _ct_origin_xy(), z], AXIAL, CT_PIXEL_MM, CT_SLICE_MM)
        ds.SliceLocation = _ds(z)
        hu = phantoms.ct_hu(x, y, np.float64(z))
        _set_mono_pixels(ds, (hu + 1024).astype(np.uint16), bits_stored=12)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.KVP = 120
        ds.ConvolutionKernel = "STANDARD"
        ds.BodyPartExamined = "PELVIS"
        slices.append(ds)
    return slices


def mr_series_datasets(rt: RtStudy) -> list[Dataset]:
    """Axial MR slices in FOR_MR; intensities sample the phantom through MR_TO_CT."""
    origin = -MR_SIZE * MR_PIXEL_MM / 2 + MR_PIXEL_MM / 2
    coords = origin + MR_PIXEL_MM * np.arange(MR_SIZE)
    gx, gy = np.meshgrid(coords, coords)  # gx varies along columns, gy along rows
    to_ct = phantoms.mr_to_ct_matrix()
    study = rt.study
    slices = []
    for index in range(rt.mr_slices):
        z = rt.mr_z(index)
        points = np.stack([gx, gy, np.full_like(gx, z)], axis=-1)
        ct_points = phantoms.apply_matrix(to_ct, points)
        signal = phantoms.mr_signal(ct_points[..., 0], ct_points[..., 1], ct_points[..., 2])
        ds = _new_instance(MR_IMAGE_STORAGE, rt.instance_uid("mr", index), rt.patient, study)
        _set_series(ds, "MR", rt.series_uid("mr"), 2, "T1 3D registered to CT", study)
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "PELVIS"
        ds.FrameOfReferenceUID = rt.for_mr
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        _set_content_time(ds, study)
        _set_image_plane(ds, [origin, origin, z], AXIAL, MR_PIXEL_MM, MR_SLICE_MM)
        ds.SpacingBetweenSlices = MR_SLICE_MM
        ds.SliceLocation = _ds(z)
        _set_mono_pixels(ds, signal.astype(np.uint16), bits_stored=12)
        _set_mr_acquisition(ds)
        ds.WindowCenter = 1000
        ds.WindowWidth = 2000
        slices.append(ds)
    return slices


def _set_mr_acquisition(ds: Dataset) -> None:
    """Type 1/2 attributes of the MR Image module (PS3.3 C.8.3.1)."""
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.RepetitionTime = 8.0
    ds.EchoTime = 3.5
    ds.EchoTrainLength = 1
    ds.FlipAngle = 12
    ds.MagneticFieldStrength = 1.5
    ds.ImagingFrequency = 63.87
    ds.ImagedNucleus = "1H"


def _circle(cx: float, cy: float, radius: float, z: float, clockwise: bool = False) -> list:
    angles = 2 * np.pi * np.arange(CIRCLE_POINTS) / CIRCLE_POINTS
    if clockwise:
        angles = -angles
    xs, ys = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    return [_ds(v) for p in zip(xs, ys, np.full_like(xs, z), strict=True) for v in p]


def _rectangle(cx: float, cy: float, sx: float, sy: float, z: float) -> list:
    per_edge = 16
    t = np.arange(per_edge) / per_edge
    x0, x1, y0, y1 = cx - sx / 2, cx + sx / 2, cy - sy / 2, cy + sy / 2
    xs = np.concatenate([x0 + t * sx, np.full(per_edge, x1), x1 - t * sx, np.full(per_edge, x0)])
    ys = np.concatenate([np.full(per_edge, y0), y0 + t * sy, np.full(per_edge, y1), y1 - t * sy])
    return [_ds(v) for p in zip(xs, ys, np.full_like(xs, z), strict=True) for v in p]


@dataclass(frozen=True)
class RoiSpec:
    number: int
    name: str
    interpreted_type: str
    color: tuple[int, int, int]
    contours: list[tuple[int, str, list]]  # (ct slice index, geometric type, points)


def roi_specs(rt: RtStudy) -> list[RoiSpec]:
    """The analytic ROIs, contoured on every CT slice they intersect."""
    cx, cy, cz = phantoms.SPHERE_CENTRE
    bx, by, bz = phantoms.BOX_CENTRE
    sx, sy, sz = phantoms.BOX_SIZE
    rx, ry = phantoms.RING_CENTRE_XY
    body, sphere, box, ring = [], [], [], []
    for index in range(rt.ct_slices):
        z = rt.ct_z(index)
        body.append((index, "CLOSED_PLANAR", _circle(0.0, 0.0, phantoms.BODY_RADIUS, z)))
        if abs(z - cz) < phantoms.SPHERE_RADIUS:
            radius = math.sqrt(phantoms.SPHERE_RADIUS**2 - (z - cz) ** 2)
            sphere.append((index, "CLOSED_PLANAR", _circle(cx, cy, radius, z)))
        if abs(z - bz) < sz / 2:
            box.append((index, "CLOSED_PLANAR", _rectangle(bx, by, sx, sy, z)))
        if phantoms.RING_Z_RANGE[0] < z < phantoms.RING_Z_RANGE[1]:
            ring.append((index, "CLOSED_PLANAR", _circle(rx, ry, phantoms.RING_OUTER_RADIUS, z)))
            ring.append(
                (
                    index,
                    "CLOSED_PLANAR",
                    _circle(rx, ry, phantoms.RING_INNER_RADIUS, z, clockwise=True),
                )
            )
    point_index = rt.ct_index_at(phantoms.POINT_MARKER[2])
    points = (
        []
        if point_index is None
        else [(point_index, "POINT", [_ds(v) for v in phantoms.POINT_MARKER])]
    )
    return [
        RoiSpec(1, "BODY", "EXTERNAL", (0, 255, 0), body),
        RoiSpec(2, "PTV_SPHERE", "PTV", (255, 0, 0), sphere),
        RoiSpec(3, "ORGAN_BOX", "ORGAN", (0, 128, 255), box),
        RoiSpec(4, "RING_HOLLOW_CYLINDER", "AVOIDANCE", (255, 255, 0), ring),
        RoiSpec(5, "POINT_MARKER", "MARKER", (255, 0, 255), points),
    ]


def _image_ref(sop_class: UID, sop_instance: UID) -> Dataset:
    return _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_instance)


def rtstruct_dataset(rt: RtStudy) -> Dataset:
    """RT Structure Set IOD (PS3.3 A.19) with contours on the CT slices."""
    study = rt.study
    ds = _new_instance(RT_STRUCT_STORAGE, rt.instance_uid("rtstruct"), rt.patient, study)
    _set_series(ds, "RTSTRUCT", rt.series_uid("rtstruct"), 3, "Analytic structures", study)
    ds.OperatorsName = "Planner^Paula"
    ds.FrameOfReferenceUID = rt.for_ct  # Frame of Reference module (checked by dciodvfy)
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "ANALYTIC"
    ds.StructureSetName = "Analytic phantom ROIs"
    ds.StructureSetDate, ds.StructureSetTime = study.date, study.time
    ct_refs = [_image_ref(CT_IMAGE_STORAGE, rt.instance_uid("ct", i)) for i in range(rt.ct_slices)]
    series_ref = _item(SeriesInstanceUID=rt.series_uid("ct"), ContourImageSequence=ct_refs)
    study_ref = _item(
        ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT,
        ReferencedSOPInstanceUID=study.uid,
        RTReferencedSeriesSequence=[series_ref],
    )
    ds.ReferencedFrameOfReferenceSequence = [
        _item(FrameOfReferenceUID=rt.for_ct, RTReferencedStudySequence=[study_ref])
    ]
    specs = roi_specs(rt)
    ds.StructureSetROISequence = [
        _item(
            ROINumber=s.number,
            ReferencedFrameOfReferenceUID=rt.for_ct,
            ROIName=s.name,
            ROIGenerationAlgorithm="MANUAL",
        )
        for s in specs
    ]
    ds.ROIContourSequence = [
        _item(
            ReferencedROINumber=s.number,
            ROIDisplayColor=list(s.color),
            ContourSequence=[
                _item(
                    ContourNumber=n + 1,
                    ContourImageSequence=[
                        _image_ref(CT_IMAGE_STORAGE, rt.instance_uid("ct", slice_index))
                    ],
                    ContourGeometricType=kind,
                    NumberOfContourPoints=len(points) // 3,
                    ContourData=points,
                )
                for n, (slice_index, kind, points) in enumerate(s.contours)
            ],
        )
        for s in specs
    ]
    ds.RTROIObservationsSequence = [
        _item(
            ObservationNumber=s.number,
            ReferencedROINumber=s.number,
            ROIObservationLabel=s.name[:16],
            RTROIInterpretedType=s.interpreted_type,
            ROIInterpreter="",
        )
        for s in specs
    ]
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _leaf_positions(field_radius: float) -> list[float]:
    """MLCX positions (bank X1 then bank X2) conforming to a circle at the isocentre."""
    half_openings = []
    for lower, upper in zip(MLC_BOUNDARIES[:-1], MLC_BOUNDARIES[1:], strict=True):
        nearest = 0.0 if lower < 0 < upper else min(abs(lower), abs(upper))
        half_openings.append(math.sqrt(max(0.0, field_radius**2 - nearest**2)))
    return [_ds(-h) for h in half_openings] + [_ds(h) for h in half_openings]


def _beam(number: int, gantry: float, meterset: float, dynamic: bool) -> Dataset:
    isocentre = [_ds(v) for v in phantoms.SPHERE_CENTRE]
    jaw = [-FIELD_RADIUS_MM, FIELD_RADIUS_MM]
    first = _item(
        ControlPointIndex=0,
        NominalBeamEnergy=6,
        DoseRateSet=600,
        BeamLimitingDevicePositionSequence=[
            _item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=jaw),
            _item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=jaw),
            _item(
                RTBeamLimitingDeviceType="MLCX", LeafJawPositions=_leaf_positions(FIELD_RADIUS_MM)
            ),
        ],
        GantryAngle=gantry,
        GantryRotationDirection="NONE",
        BeamLimitingDeviceAngle=0,
        BeamLimitingDeviceRotationDirection="NONE",
        PatientSupportAngle=0,
        PatientSupportRotationDirection="NONE",
        TableTopEccentricAngle=0,
        TableTopEccentricRotationDirection="NONE",
        TableTopVerticalPosition="",
        TableTopLongitudinalPosition="",
        TableTopLateralPosition="",
        IsocenterPosition=isocentre,
        SourceToSurfaceDistance=_ds(1000.0 - (phantoms.BODY_RADIUS - 20.0)),
        CumulativeMetersetWeight=0,
    )
    last = _item(ControlPointIndex=1, CumulativeMetersetWeight=1)
    if dynamic:  # sliding-window style: the aperture shrinks by 5 mm during delivery
        last.BeamLimitingDevicePositionSequence = [
            _item(
                RTBeamLimitingDeviceType="MLCX",
                LeafJawPositions=_leaf_positions(FIELD_RADIUS_MM - 5.0),
            )
        ]
    return _item(
        BeamNumber=number,
        BeamName=f"G{int(gantry):03d}",
        BeamDescription=f"6 MV {'dynamic' if dynamic else 'static'} conformal beam",
        BeamType="DYNAMIC" if dynamic else "STATIC",
        RadiationType="PHOTON",
        TreatmentMachineName="LINAC1",
        PrimaryDosimeterUnit="MU",
        SourceAxisDistance=1000.0,
        BeamLimitingDeviceSequence=[
            _item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
            _item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1),
            _item(
                RTBeamLimitingDeviceType="MLCX",
                NumberOfLeafJawPairs=60,
                LeafPositionBoundaries=MLC_BOUNDARIES,
            ),
        ],
        ReferencedPatientSetupNumber=1,
        TreatmentDeliveryType="TREATMENT",
        NumberOfWedges=0,
        NumberOfCompensators=0,
        NumberOfBoli=0,
        NumberOfBlocks=0,
        FinalCumulativeMetersetWeight=1,
        NumberOfControlPoints=2,
        ControlPointSequence=[first, last],
    )


def beam_metersets() -> list[float]:
    return [round(110.0 + 7.5 * i, 1) for i in range(len(GANTRY_ANGLES))]


def rtplan_dataset(rt: RtStudy) -> Dataset:
    """RT Plan IOD (PS3.3 A.20): 5 coplanar 6 MV photon beams on the PTV sphere."""
    study = rt.study
    ds = _new_instance(RT_PLAN_STORAGE, rt.instance_uid("rtplan"), rt.patient, study)
    _set_series(ds, "RTPLAN", rt.series_uid("rtplan"), 4, "Analytic plan", study)
    ds.OperatorsName = "Planner^Paula"
    ds.FrameOfReferenceUID = rt.for_ct
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "PTV 60Gy"
    ds.RTPlanName = "Analytic 5 field"
    ds.RTPlanDate, ds.RTPlanTime = study.date, study.time
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = [_image_ref(RT_STRUCT_STORAGE, rt.instance_uid("rtstruct"))]
    ds.DoseReferenceSequence = [
        _item(
            DoseReferenceNumber=1,
            DoseReferenceUID=rt.uid("dose-reference", 1),
            DoseReferenceStructureType="VOLUME",
            ReferencedROINumber=2,
            DoseReferenceDescription="PTV_SPHERE",
            DoseReferenceType="TARGET",
            TargetPrescriptionDose=PRESCRIPTION_GY,
        )
    ]
    metersets = beam_metersets()
    ds.FractionGroupSequence = [
        _item(
            FractionGroupNumber=1,
            NumberOfFractionsPlanned=FRACTIONS,
            NumberOfBeams=len(GANTRY_ANGLES),
            NumberOfBrachyApplicationSetups=0,
            ReferencedBeamSequence=[
                _item(
                    ReferencedBeamNumber=i + 1,
                    BeamMeterset=m,
                    BeamDose=_ds(PRESCRIPTION_GY / FRACTIONS / len(GANTRY_ANGLES)),
                )
                for i, m in enumerate(metersets)
            ],
        )
    ]
    ds.BeamSequence = [
        _beam(i + 1, gantry, metersets[i], dynamic=(i == len(GANTRY_ANGLES) - 1))
        for i, gantry in enumerate(GANTRY_ANGLES)
    ]
    ds.PatientSetupSequence = [
        _item(PatientSetupNumber=1, PatientPosition="HFS", SetupTechnique="ISOCENTRIC")
    ]
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def dose_grid_points(
    position: Sequence[float],
    orientation: Sequence[float],
    offsets: Sequence[float],
    rows: int,
    columns: int,
    spacing: float,
    absolute: bool,
) -> np.ndarray:
    """Patient coordinates (frames, rows, columns, 3) of an RT Dose grid (PS3.3 C.8.8.3.2)."""
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    origin = np.array(position, dtype=float)
    rel = np.array(offsets, dtype=float) - (offsets[0] if absolute else 0.0)
    c = np.arange(columns)[None, None, :, None] * spacing * row_dir
    r = np.arange(rows)[None, :, None, None] * spacing * col_dir
    f = rel[:, None, None, None] * normal
    return origin + f + r + c


@dataclass(frozen=True)
class DoseGrid:
    position: list[float]
    orientation: list[float]
    offsets: list[float]
    rows: int
    columns: int
    absolute: bool


def dose_grid(offsets: str = "relative", orientation: str = "axial") -> DoseGrid:
    """Dose grid geometry; nodes fall on the sphere centre (the dose maximum)."""
    if orientation == "sagittal" and offsets == "absolute":
        raise ValueError("absolute GridFrameOffsetVector is only defined for axial grids")
    cx, cy, cz = phantoms.SPHERE_CENTRE
    step = DOSE_PIXEL_MM
    half_frames = DOSE_FRAMES // 2
    if orientation == "axial":
        position = [cx - 64 * step, cy - 64 * step, cz - half_frames * step]
        rel = [i * step for i in range(DOSE_FRAMES)]
        frame_offsets = [position[2] + o for o in rel] if offsets == "absolute" else rel
        return DoseGrid(
            position, AXIAL, frame_offsets, DOSE_ROWS, DOSE_COLUMNS, offsets == "absolute"
        )
    if orientation == "sagittal":  # frames step along normal = (-1, 0, 0)
        position = [cx + 64 * step, cy - 64 * step, cz + half_frames * step]
        rel = [i * step for i in range(DOSE_COLUMNS)]
        return DoseGrid(position, SAGITTAL, rel, DOSE_FRAMES, DOSE_COLUMNS, False)
    raise ValueError(f"unknown orientation {orientation!r}")


def rtdose_dataset(
    rt: RtStudy, *, offsets: str = "relative", orientation: str = "axial", bits: int = 32
) -> Dataset:
    """RT Dose IOD (PS3.3 A.18) sampling the analytic Gaussian dose on a 2.5 mm grid.

    ``offsets="absolute"`` writes GridFrameOffsetVector as z coordinates (first element =
    z of Image Position (Patient)), allowed only for axial grids (C.8.8.3.2);
    ``orientation="sagittal"`` gives a sagittal grid whose frames step along -x.
    ``bits`` is BitsAllocated (32 or 16); the DoseGridScaling follows DOSE_GRID_SCALING.
    """
    grid = dose_grid(offsets, orientation)
    variant = "" if (offsets, orientation) == ("relative", "axial") else f"-{offsets}-{orientation}"
    variant += "" if bits == 32 else f"-{bits}bit"
    study = rt.study
    ds = _new_instance(RT_DOSE_STORAGE, rt.instance_uid("rtdose" + variant), rt.patient, study)
    series_number = (
        5 if not variant else 50 + (offsets == "absolute") + 2 * (orientation == "sagittal")
    )
    _set_series(
        ds,
        "RTDOSE",
        rt.series_uid("rtdose" + variant),
        series_number,
        f"Analytic Gaussian dose{variant}",
        study,
    )
    ds.OperatorsName = "Planner^Paula"
    ds.FrameOfReferenceUID = rt.for_ct
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    _set_content_time(ds, study)
    _set_image_plane(ds, grid.position, grid.orientation, DOSE_PIXEL_MM, DOSE_PIXEL_MM)
    points = dose_grid_points(
        grid.position,
        grid.orientation,
        grid.offsets,
        grid.rows,
        grid.columns,
        DOSE_PIXEL_MM,
        grid.absolute,
    )
    scaling = DOSE_GRID_SCALING[bits]
    stored = np.rint(phantoms.dose_gy(points) / scaling).astype(f"uint{bits}")
    _set_mono_pixels(ds, stored)
    ds.NumberOfFrames = len(grid.offsets)
    ds.FrameIncrementPointer = "GridFrameOffsetVector"
    ds.GridFrameOffsetVector = [_ds(v) for v in grid.offsets]
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseComment = "D = Dmax * exp(-|p - c|^2 / (2 sigma^2)), see ground_truth.json"
    ds.DoseGridScaling = scaling
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ds.ReferencedRTPlanSequence = [_image_ref(RT_PLAN_STORAGE, rt.instance_uid("rtplan"))]
    return ds


def reg_dataset(rt: RtStudy) -> Dataset:
    """Spatial Registration IOD (PS3.3 A.39) in FOR_CT registering FOR_MR onto it.

    PS3.3 C.20.2.1.1: each item's matrix maps coordinates of that item's (source) Frame of
    Reference into the Registered RCS, the Frame of Reference of this instance (FOR_CT).
    """
    study = rt.study
    ds = _new_instance(SPATIAL_REGISTRATION_STORAGE, rt.instance_uid("reg"), rt.patient, study)
    _set_series(ds, "REG", rt.series_uid("reg"), 6, "MR to CT rigid registration", study)
    ds.BodyPartExamined = "PELVIS"
    ds.FrameOfReferenceUID = rt.for_ct
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.ContentLabel = "MR_TO_CT"
    ds.ContentDescription = "Rigid MR to planning CT registration"
    ds.ContentCreatorName = "Planner^Paula"
    _set_content_time(ds, study)
    roles = (
        ("ct", rt.for_ct, CT_IMAGE_STORAGE, rt.ct_slices, np.eye(4)),
        ("mr", rt.for_mr, MR_IMAGE_STORAGE, rt.mr_slices, phantoms.mr_to_ct_matrix()),
    )
    items, series_refs = [], []
    for role, frame_uid, sop_class, count, matrix in roles:
        refs = [_image_ref(sop_class, rt.instance_uid(role, i)) for i in range(count)]
        matrix_item = _item(
            FrameOfReferenceTransformationMatrixType="RIGID",
            FrameOfReferenceTransformationMatrix=[_ds(v) for v in matrix.ravel()],
        )
        items.append(
            _item(
                FrameOfReferenceUID=frame_uid,
                ReferencedImageSequence=refs,
                MatrixRegistrationSequence=[
                    _item(
                        FrameOfReferenceTransformationComment=f"{role.upper()} to CT coordinates",
                        RegistrationTypeCodeSequence=DicomSequence(),
                        MatrixSequence=[matrix_item],
                    )
                ],
            )
        )
        series_refs.append(
            _item(SeriesInstanceUID=rt.series_uid(role), ReferencedInstanceSequence=refs)
        )
    ds.RegistrationSequence = items
    ds.ReferencedSeriesSequence = series_refs
    return ds


# --- Ground truth --------------------------------------------------------------------
def _dose_samples() -> list[dict]:
    cx, cy, cz = phantoms.SPHERE_CENTRE
    samples = [
        (cx, cy, cz),
        (cx + 10.0, cy, cz),
        (cx, cy - 25.0, cz),
        (cx + 7.5, cy + 5.0, cz - 12.5),
        (cx + 1.25, cy - 3.75, cz + 2.5),
        (-60.0, 30.0, 0.0),
        (0.0, 0.0, 0.0),
        (cx + 3.3, cy - 7.1, cz + 4.2),
    ]
    return [
        {"point_mm": [float(v) for v in p], "dose_gy": float(phantoms.dose_gy(np.array(p)))}
        for p in samples
    ]


def _dose_grid_truth(offsets: str, orientation: str) -> dict:
    grid = dose_grid(offsets, orientation)
    return {
        "image_position_mm": grid.position,
        "image_orientation": grid.orientation,
        "grid_frame_offsets": offsets,
        "frames": len(grid.offsets),
        "rows": grid.rows,
        "columns": grid.columns,
        "frame_normal": np.cross(grid.orientation[:3], grid.orientation[3:]).tolist(),
    }


def ground_truth(rt: RtStudy, hard_cases: Iterable[tuple[str, str]] = ()) -> dict:
    to_ct = phantoms.mr_to_ct_matrix()
    roles = {"ct": rt.ct_slices, "mr": rt.mr_slices}
    series = {
        role: rt.series_uid(role) for role in ("ct", "mr", "rtstruct", "rtplan", "rtdose", "reg")
    }
    instances: dict[str, object] = {
        role: [rt.instance_uid(role, i) for i in range(n)] for role, n in roles.items()
    }
    for role in ("rtstruct", "rtplan", "rtdose", "reg"):
        instances[role] = rt.instance_uid(role)
    for offsets, orientation in hard_cases:
        key = f"rtdose-{offsets}-{orientation}"
        series[key] = rt.series_uid(key)
        instances[key] = rt.instance_uid(key)
    truth = {
        "patient": {"name": rt.patient.name, "id": rt.patient.patient_id},
        "study_instance_uid": rt.study.uid,
        "series_instance_uids": series,
        "sop_instance_uids": instances,
        "frame_of_reference_uids": {"FOR_CT": rt.for_ct, "FOR_MR": rt.for_mr},
        "ct": {
            "slices": rt.ct_slices,
            "pixel_spacing_mm": CT_PIXEL_MM,
            "slice_thickness_mm": CT_SLICE_MM,
            "z_first_mm": rt.ct_z(0),
            "z_extent_mm": list(rt.ct_z_extent),
            "hu": {
                "air": phantoms.HU_AIR,
                "body": phantoms.HU_WATER,
                "sphere": phantoms.HU_SPHERE,
                "box": phantoms.HU_BOX,
                "ring_wall": phantoms.HU_RING_WALL,
            },
        },
        "mr": {
            "slices": rt.mr_slices,
            "pixel_spacing_mm": MR_PIXEL_MM,
            "slice_spacing_mm": MR_SLICE_MM,
            "z_first_mm": rt.mr_z(0),
            "signal": {
                "air": phantoms.MR_AIR,
                "body": phantoms.MR_WATER,
                "sphere": phantoms.MR_SPHERE,
            },
        },
        "registration": {
            "mr_to_ct_matrix": to_ct.tolist(),
            "convention": (
                "p_ct = M @ [x_mr, y_mr, z_mr, 1]: M maps MR patient coordinates (FOR_MR) into "
                "CT patient coordinates (FOR_CT). The REG instance has FrameOfReferenceUID = "
                "FOR_CT (Registered RCS); its RegistrationSequence item for FOR_MR carries M, "
                "the item for FOR_CT the identity (PS3.3 C.20.2.1.1: the matrix transforms "
                "from the item's Frame of Reference into the instance's)."
            ),
            "rotation_deg_about_z": phantoms.MR_ROTATION_DEG,
            "translation_mm": list(phantoms.MR_TRANSLATION_MM),
        },
        "sphere": {
            "radius_mm": phantoms.SPHERE_RADIUS,
            "centre_ct_mm": list(phantoms.SPHERE_CENTRE),
            "centre_mr_mm": list(phantoms.sphere_centre_mr()),
        },
        "rois": phantoms.roi_truths(rt.ct_z_extent),
        "roi_numbers": {s.name: s.number for s in roi_specs(rt)},
        "point_marker_mm": list(phantoms.POINT_MARKER),
        "dose": {
            "formula": "D(p) = dmax_gy * exp(-|p - centre_mm|^2 / (2 * sigma_mm^2)), p in FOR_CT",
            "dmax_gy": phantoms.DOSE_MAX_GY,
            "sigma_mm": phantoms.DOSE_SIGMA_MM,
            "centre_mm": list(phantoms.SPHERE_CENTRE),
            "grid_scaling": DOSE_GRID_SCALING[32],
            "grid_spacing_mm": DOSE_PIXEL_MM,
            "samples": _dose_samples(),
            "dvh": {
                "PTV_SPHERE": phantoms.sphere_dvh_reference(),
                "ORGAN_BOX": phantoms.box_dose_reference(),
                "method": (
                    "continuous (not dose-grid) values: PTV_SPHERE closed form since dose is "
                    "monotonic in distance to the sphere centre (D_x = D(R (x/100)^(1/3))), "
                    "ORGAN_BOX mean as a separable erf integral; Dx = minimum dose to the "
                    "hottest x% of the volume"
                ),
            },
        },
        "dose_grids": {
            key: _dose_grid_truth(offsets, orientation)
            for key, (offsets, orientation) in {
                "rtdose": ("relative", "axial"),
                **{f"rtdose-{o}-{d}": (o, d) for o, d in hard_cases},
            }.items()
        },
        "plan": {
            "prescription_gy": PRESCRIPTION_GY,
            "fractions": FRACTIONS,
            "gantry_angles_deg": list(GANTRY_ANGLES),
            "beam_metersets_mu": beam_metersets(),
            "isocenter_mm": list(phantoms.SPHERE_CENTRE),
        },
    }
    return truth


def generate_rt_study(
    out_dir: str | Path,
    *,
    ct_slices: int = 60,
    mr_slices: int = 400,
    seed: int = 0,
    hard_cases: bool = False,
) -> dict:
    """Write the RT study under ``out_dir/rt`` and return (and write) its ground truth."""
    out_dir = Path(out_dir)
    rt = RtStudy(seed=seed, ct_slices=ct_slices, mr_slices=mr_slices)
    rt_dir = out_dir / "rt"
    for index, ds in enumerate(ct_series_datasets(rt)):
        write(ds, rt_dir / "CT" / f"CT{index + 1:04d}.dcm")
    for index, ds in enumerate(mr_series_datasets(rt)):
        write(ds, rt_dir / "MR" / f"MR{index + 1:04d}.dcm")
    write(rtstruct_dataset(rt), rt_dir / "RTSTRUCT.dcm")
    write(rtplan_dataset(rt), rt_dir / "RTPLAN.dcm")
    write(rtdose_dataset(rt), rt_dir / "RTDOSE.dcm")
    write(reg_dataset(rt), rt_dir / "REG.dcm")
    variants = [("absolute", "axial"), ("relative", "sagittal")] if hard_cases else []
    for offsets, orientation in variants:
        ds = rtdose_dataset(rt, offsets=offsets, orientation=orientation)
        write(ds, rt_dir / "hard_cases" / f"RTDOSE_{offsets}_{orientation}.dcm")
    truth = ground_truth(rt, variants)
    _write_json(out_dir / "ground_truth.json", truth)
    return truth


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


# --- Small studies for query tests ---------------------------------------------------------
UTF8_NAMES = (
    "Dvořák^Antonín",
    "王^小明",
    "Müller^Jürgen",
    "Nguyễn^Văn",
    "Wang^XiaoMing=王^小明",
    "Øyen^Åse",
    "Παπαδόπουλος^Ελένη",
    "Ivanova^Ольга",
)
LATIN1_NAMES = ("Müller^Anna", "Lefèvre^François", "Núñez^José", "Göransson^Sören")
FAMILY_NAMES = (
    "Smith",
    "Johnson",
    "Garcia",
    "Brown",
    "Okafor",
    "Tanaka",
    "Kowalski",
    "Rossi",
    "O'Neil",
    "Van der Berg",
    "Smithson",
    "Lee",
)
GIVEN_NAMES = ("John", "Mary", "Ahmed", "Li", "Anna", "Pedro", "Yuki", "Grace", "Tom", "Sara")
PHYSICIANS = ("House^Gregory", "Grey^Meredith", "Kildare^James", "", "Quinn^Michaela^^Dr")
MODALITIES = ("CT", "MR", "CR", "DX", "US", "PT", "NM", "MG")
BODY_PARTS = {
    "CT": ("CHEST", "ABDOMEN", "HEAD"),
    "MR": ("BRAIN", "KNEE", "SPINE"),
    "CR": ("CHEST", "HAND"),
    "DX": ("CHEST", "FOOT"),
    "US": ("ABDOMEN", "THYROID"),
    "PT": ("WHOLEBODY",),
    "NM": ("WHOLEBODY", "THYROID"),
    "MG": ("BREAST",),
}
DESCRIPTIONS = {
    "CT": "CT chest w/o contrast",
    "MR": "MR brain",
    "CR": "XR chest 2 views",
    "DX": "DX extremity",
    "US": "US abdomen",
    "PT": "PET/CT FDG",
    "NM": "Bone scan",
    "MG": "Screening mammogram",
}
ANATOMIC_REGIONS = {"CHEST": ("51185008", "SCT", "Chest"), "FOOT": ("56459004", "SCT", "Foot")}
PAIRED_BODY_PARTS = {"HAND", "KNEE", "FOOT", "BREAST"}
SOP_CLASSES = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "CR": CR_IMAGE_STORAGE,
    "DX": DX_IMAGE_STORAGE,
    "US": US_IMAGE_STORAGE,
    "PT": PET_IMAGE_STORAGE,
    "NM": NM_IMAGE_STORAGE,
    "MG": MG_IMAGE_STORAGE,
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _patients(rng: np.random.Generator, count: int, seed: int) -> list[Patient]:
    patients = []
    for index in range(count):
        roll = index % 10
        if roll in (0, 5) and index // 10 < len(UTF8_NAMES) * 2:
            name, charset = UTF8_NAMES[(index // 5) % len(UTF8_NAMES)], "ISO_IR 192"
        elif roll == 3:
            name, charset = LATIN1_NAMES[(index // 10) % len(LATIN1_NAMES)], "ISO_IR 100"
        else:
            family = FAMILY_NAMES[rng.integers(len(FAMILY_NAMES))]
            given = GIVEN_NAMES[rng.integers(len(GIVEN_NAMES))]
            extra = ("", "^A", "^B^Mr", "^^Dr^PhD")[rng.integers(4)]
            name, charset = f"{family}^{given}{extra}", "ISO_IR 100"
        year = 1930 + int(rng.integers(90))
        birth = f"{year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        sex = ("M", "F", "O")[int(rng.integers(3))]
        patients.append(Patient(name, f"PID{seed:02d}{index:05d}", birth, sex, charset))
    return patients


def _noise_image(rng: np.random.Generator, rows: int, columns: int, maximum: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns]
    base = (xx + yy) / (rows + columns - 2) * maximum * 0.8
    return np.clip(base + rng.integers(0, maximum // 5, size=(rows, columns)), 0, maximum)


def _set_cross_sectional(ds: Dataset, frame_uid: str, index: int, spacing: float) -> None:
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    _set_image_plane(ds, [-32.0 * spacing, -32.0 * spacing, 5.0 * index], AXIAL, spacing, 5.0)
    ds.SliceLocation = 5.0 * index


def _set_projection(ds: Dataset, laterality: str | None = None) -> None:
    """DX family (PS3.3 C.8.11): DX Series, Anatomy Imaged, DX Image, Detector modules."""
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = laterality or "U"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.AcquisitionContextSequence = DicomSequence()
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PatientOrientation = ["A", "F"] if laterality is None else ["P", "L"]


def _small_image(
    modality: str,
    rng: np.random.Generator,
    patient: Patient,
    study: Study,
    series: dict,
    index: int,
    frame_uid: str,
) -> Dataset:
    ds = _new_instance(SOP_CLASSES[modality], series["instances"][index], patient, study)
    _set_series(
        ds,
        modality,
        series["series_instance_uid"],
        series["series_number"],
        series["description"],
        study,
    )
    ds.BodyPartExamined = series["body_part"]
    laterality = "L" if series["series_number"] % 2 else "R"
    paired = series["body_part"] in PAIRED_BODY_PARTS
    if paired and modality not in ("DX", "MG"):  # DX/MG use ImageLaterality instead
        ds.Laterality = laterality  # General Series Type 2C for paired structures
    ds.InstanceNumber = index + 1
    _set_content_time(ds, study)
    ds.AcquisitionDate, ds.AcquisitionTime = study.date, study.time
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "US":
        rgb = np.stack([_noise_image(rng, 48, 64, 255)] * 3, axis=-1).astype(np.uint8)
        rgb[..., 0] = 255 - rgb[..., 0]
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = rgb.shape[:2]
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = rgb.tobytes()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
        ds.PatientOrientation = ""
        ds.LossyImageCompression = "00"
        return ds
    rows = 32 if modality == "PT" else 64
    bits_stored = 16 if modality in ("PT", "NM") else 12  # PS3.3 C.8.9.4 / C.8.4.7
    _set_mono_pixels(ds, _noise_image(rng, rows, rows, 4095).astype(np.uint16), bits_stored)
    if modality in ("CT", "MR", "PT"):
        _set_cross_sectional(ds, frame_uid, index, 4.0 if modality == "PT" else 1.0)
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
    elif modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        _set_mr_acquisition(ds)
        ds.SpacingBetweenSlices = 5.0
    elif modality == "PT":
        _set_pet(ds, study, index)
    elif modality == "CR":
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
    elif modality == "NM":
        _set_nm(ds)
    elif modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        _set_projection(ds, laterality if paired else None)
        ds.ViewPosition = "AP"
        ds.ViewCodeSequence = [_code("399348003", "SCT", "antero-posterior")]
        ds.PositionerType = "COLUMN"
        ds.AnatomicRegionSequence = [_code(*ANATOMIC_REGIONS[series["body_part"]])]
    elif modality == "MG":
        _set_mammography(ds, laterality="LR"[index % 2])
    return ds


def _set_pet(ds: Dataset, study: Study, index: int) -> None:
    """PET Series, PET Isotope, NM/PET Patient Orientation and PET Image modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    del ds.PatientPosition  # replaced by PatientOrientationCodeSequence for PET
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.CorrectedImage = ["DECY", "ATTN"]
    ds.DecayCorrection = "START"
    ds.DecayFactor = 1.0
    ds.RandomsCorrectionMethod = "NONE"
    ds.ReconstructionMethod = "OSEM"
    ds.NumberOfSlices = 4
    ds.CollimatorType = "NONE"
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1.5
    ds.FrameReferenceTime = 0
    ds.ImageIndex = index + 1
    ds.ActualFrameDuration = 120000
    ds.SliceSensitivityFactor = 1.0
    ds.RadiopharmaceuticalInformationSequence = [
        _item(
            Radiopharmaceutical="Fluorodeoxyglucose",
            RadiopharmaceuticalStartTime="080000",
            RadionuclideTotalDose=370000000,
            RadionuclideHalfLife=6586.2,
            RadionuclideCodeSequence=[_code("77004003", "SCT", "^18^Fluorine")],
        )
    ]
    ds.PatientOrientationCodeSequence = [_code("102538003", "SCT", "recumbent")]
    ds.PatientGantryRelationshipCodeSequence = [_code("102540008", "SCT", "headfirst")]


def _set_nm(ds: Dataset) -> None:
    """NM Image Pixel, Multi-frame, NM Image, NM Isotope and NM Detector modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
    ds.PixelSpacing = [4.0, 4.0]
    ds.CountsAccumulated = 250000
    ds.ActualFrameDuration = 300000
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = ["EnergyWindowVector", "DetectorVector"]
    ds.EnergyWindowVector = [1]
    ds.NumberOfEnergyWindows = 1
    ds.DetectorVector = [1]
    ds.NumberOfDetectors = 1
    ds.PatientOrientation = ["L", "F"]
    ds.EnergyWindowInformationSequence = [
        _item(
            EnergyWindowRangeSequence=[
                _item(EnergyWindowLowerLimit=126.0, EnergyWindowUpperLimit=154.0)
            ]
        )
    ]
    ds.RadiopharmaceuticalInformationSequence = [
        _item(RadionuclideCodeSequence=[_code("44588005", "SCT", "^99m^Technetium")])
    ]
    ds.DetectorInformationSequence = [
        _item(
            CollimatorGridName="LEHR",
            CollimatorType="PARA",
            ImagePositionPatient=[0.0, 0.0, 0.0],
            ImageOrientationPatient=[1.0, 0, 0, 0, 0, -1.0],
        )
    ]
    ds.PatientOrientationCodeSequence = [_code("102538003", "SCT", "recumbent")]
    ds.PatientGantryRelationshipCodeSequence = [_code("102540008", "SCT", "headfirst")]


def _set_mammography(ds: Dataset, laterality: str) -> None:
    """DX modules plus Mammography Series / Image (PS3.3 C.8.11.7)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    _set_projection(ds, laterality)
    ds.PatientOrientation = ["P", "L" if laterality == "R" else "R"]
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ViewPosition = ""
    ds.ViewCodeSequence = [
        _item(
            CodeValue="399162004",
            CodingSchemeDesignator="SCT",
            CodeMeaning="cranio-caudal",
            ViewModifierCodeSequence=[],
        )
    ]
    ds.AnatomicRegionSequence = [_code("76752008", "SCT", "Breast")]
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"


def _study_date(rng: np.random.Generator) -> tuple[str, str]:
    year = 2005 + int(rng.integers(20))
    day = f"{year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    clock = f"{int(rng.integers(7, 20)):02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}"
    return day, clock


def small_study_datasets(
    index: int, patient: Patient, rng: np.random.Generator, seed: int
) -> tuple[dict, list[Dataset]]:
    """One small study: its summary and in-memory instances."""
    date, clock = _study_date(rng)
    primary = MODALITIES[(index + int(rng.integers(3))) % len(MODALITIES)]
    n_series = 1 + int(rng.integers(3))
    modalities = [primary] + [
        "CT" if primary == "PT" else primary if rng.random() < 0.7 else "CR"
        for _ in range(n_series - 1)
    ]
    study = Study(
        uid=make_uid(seed, "small", index, "study"),
        date=date,
        time=clock,
        study_id=f"S{index:05d}",
        accession=f"ACC{seed:02d}{index:06d}",
        description=DESCRIPTIONS[primary],
        referring_physician=PHYSICIANS[index % len(PHYSICIANS)],
    )
    frame_uid = make_uid(seed, "small", index, "for")
    datasets: list[Dataset] = []
    series_summaries = []
    for s, modality in enumerate(modalities):
        parts = BODY_PARTS[modality]
        count = 1 + int(rng.integers(4))
        series = {
            "series_instance_uid": make_uid(seed, "small", index, "series", s),
            "modality": modality,
            "series_number": s + 1,
            "description": f"{modality} series {s + 1}",
            "body_part": parts[int(rng.integers(len(parts)))],
            "instances": [make_uid(seed, "small", index, "series", s, i) for i in range(count)],
        }
        series_summaries.append(series)
        for i in range(count):
            datasets.append(_small_image(modality, rng, patient, study, series, i, frame_uid))
    summary = {
        "study_instance_uid": study.uid,
        "patient_name": patient.name,
        "patient_id": patient.patient_id,
        "patient_birth_date": patient.birth_date,
        "patient_sex": patient.sex,
        "specific_character_set": patient.charset,
        "study_date": study.date,
        "study_time": study.time,
        "accession_number": study.accession,
        "study_description": study.description,
        "referring_physician_name": study.referring_physician,
        "modalities": sorted(set(modalities)),
        "series": series_summaries,
        "instance_count": len(datasets),
    }
    return summary, datasets


def generate_small_studies(out_dir: str | Path, n: int, *, seed: int = 0) -> list[dict]:
    """Write ``n`` small studies under ``out_dir/small`` and return one summary per study."""
    rng = np.random.default_rng(seed)
    patients = _patients(rng, max(min(n, 10), (2 * n) // 3), seed)  # some repeat
    summaries = []
    for index in range(n):
        patient = patients[index % len(patients)]
        summary, datasets = small_study_datasets(index, patient, rng, seed)
        for ds in datasets:
            series_dir = f"series{int(ds.SeriesNumber):02d}"
            write(
                ds,
                Path(out_dir)
                / "small"
                / f"study{index:04d}"
                / series_dir
                / f"{int(ds.InstanceNumber):03d}.dcm",
            )
        summaries.append(summary)
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--small-studies", type=int, default=200)
    parser.add_argument("--mr-slices", type=int, default=400)
    parser.add_argument("--ct-slices", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hard-cases",
        action="store_true",
        help="also write absolute-offset and sagittal RTDOSE variants",
    )
    parser.add_argument(
        "--dvh-set",
        action="store_true",
        help="also write the analytic DVH test set (conformance.dvhset) under OUT_DIR/dvh",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    truth = generate_rt_study(
        args.out_dir,
        ct_slices=args.ct_slices,
        mr_slices=args.mr_slices,
        seed=args.seed,
        hard_cases=args.hard_cases,
    )
    truth["small_studies"] = generate_small_studies(
        args.out_dir, args.small_studies, seed=args.seed
    )
    if args.dvh_set:
        from conformance import dvhset  # builds on this module

        truth["dvh_set"] = dvhset.write_set(args.out_dir / "dvh")["structure_sets"]
    _write_json(args.out_dir / "ground_truth.json", truth)
    print(f"wrote {args.out_dir} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
