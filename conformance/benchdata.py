"""Deterministic in-memory benchmark data (pydicom, explicit VR little endian).

* ``small_study(i)``: one series of 2-5 small 64x64 CT/MR/CR instances per study index.
* ``mr_slice(k)``: one 256x256 uint16 slice (128 KiB of pixels) of a big MR series.
* ``rt_study(n)``: the RT study the benchmark reads from: 60 CT slices of 512x512, an MR
  series of ``n`` 256x256 slices, RTSTRUCT, RTPLAN, RTDOSE and REG (``conformance.generate``).

UIDs live under ``BENCH_UID_ROOT`` and every PatientID starts with ``BENCH`` so that benchmark
data can be recognised (and cleaned up) on any server. Same index -> same UIDs and bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

from conformance import generate
from conformance.generate import Patient, RtStudy

BENCH_UID_ROOT = "1.2.826.0.1.3680043.10.1311.77"  # recognisable, fixed: ".77" = bench
BENCH_PATIENT_PREFIX = "BENCH"
MR_PATIENT_ID = f"{BENCH_PATIENT_PREFIX}-MR"

SOP_CLASS_BY_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}
MODALITY_CYCLE = ("CT", "MR", "CR", "CT", "MR")
FAMILY_NAMES = (
    "Smith", "Schmidt", "Silva", "Nguyen", "Garcia", "Muller", "Rossi", "Kowalski",
    "Jansen", "Dubois", "Tanaka", "Olsen", "Sato", "Brown", "Novak", "Ivanova",
)  # fmt: skip
GIVEN_NAMES = ("Anna", "Ben", "Chloe", "David", "Eva", "Felix", "Greta", "Hugo", "Ines", "Jon")
DESCRIPTIONS = {
    "CT": ("CT CHEST", "CT ABDOMEN PELVIS", "CT HEAD"),
    "MR": ("MR BRAIN", "MR KNEE", "MR SPINE"),
    "CR": ("CR CHEST PA", "CR HAND", "CR PELVIS"),
}
SMALL_SIZE = 64
MR_SIZE = 256


@dataclass(frozen=True)
class BenchInstance:
    """One encoded Part 10 file plus the UIDs needed to address it over DICOMweb."""

    study_uid: str
    series_uid: str
    sop_uid: str
    data: bytes


def study_uid(study_index: int) -> str:
    return f"{BENCH_UID_ROOT}.1.{study_index}"


def mr_study_uid() -> str:
    return f"{BENCH_UID_ROOT}.2.1"


def mr_series_uid() -> str:
    return f"{BENCH_UID_ROOT}.2.1.1"


def patient_id(study_index: int) -> str:
    """About two studies per patient: patient n owns studies 2n and 2n+1."""
    return f"{BENCH_PATIENT_PREFIX}{study_index // 2:06d}"


def patient_name(study_index: int) -> str:
    patient = study_index // 2
    family = FAMILY_NAMES[patient % len(FAMILY_NAMES)]
    given = GIVEN_NAMES[(patient // len(FAMILY_NAMES)) % len(GIVEN_NAMES)]
    return f"{family}^{given}^^^{patient}"


def study_date(study_index: int) -> str:
    """Dates spread deterministically over 2015-2024."""
    year = 2015 + (study_index * 7) % 10
    month = 1 + (study_index * 5) % 12
    day = 1 + (study_index * 11) % 28
    return f"{year:04d}{month:02d}{day:02d}"


def instances_in_study(study_index: int) -> int:
    return 2 + (study_index * 3) % 4  # 2..5


def small_study_instance_count(study_count: int, first_index: int = 0) -> int:
    return sum(instances_in_study(i) for i in range(first_index, first_index + study_count))


def _patient_and_study(ds: Dataset, index: int, modality: str) -> None:
    ds.PatientName = patient_name(index)
    ds.PatientID = patient_id(index)
    ds.PatientBirthDate = f"{1940 + (index // 2) % 60:04d}{1 + index % 12:02d}15"
    ds.PatientSex = "F" if (index // 2) % 2 else "M"
    ds.StudyInstanceUID = study_uid(index)
    ds.StudyDate = study_date(index)
    ds.StudyTime = f"{8 + index % 10:02d}{index % 60:02d}00"
    ds.StudyID = str(index)
    ds.AccessionNumber = f"BA{index:08d}"
    ds.ReferringPhysicianName = f"Ref^{FAMILY_NAMES[index % 7]}"
    descriptions = DESCRIPTIONS[modality]
    ds.StudyDescription = descriptions[index % len(descriptions)]


def _image_module(ds: Dataset, size: int, bits_stored: int, pixels: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.8, 0.8]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.WindowCenter = 1 << (bits_stored - 2)
    ds.WindowWidth = 1 << (bits_stored - 1)
    ds.PixelData = pixels.astype("<u2").tobytes()


def _encode(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _small_pixels(index: int, instance_number: int) -> np.ndarray:
    rng = np.random.default_rng(index * 16 + instance_number)
    yy, xx = np.mgrid[0:SMALL_SIZE, 0:SMALL_SIZE]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < (10 + instance_number * 3) ** 2) * 1500
    return disc + rng.integers(0, 400, size=(SMALL_SIZE, SMALL_SIZE))


def small_study(index: int) -> list[BenchInstance]:
    """All instances of small study ``index`` (1 series, 2-5 instances)."""
    modality = MODALITY_CYCLE[index % len(MODALITY_CYCLE)]
    series_uid = f"{study_uid(index)}.1"
    instances = []
    for number in range(1, instances_in_study(index) + 1):
        ds = Dataset()
        _patient_and_study(ds, index, modality)
        ds.SOPClassUID = SOP_CLASS_BY_MODALITY[modality]
        ds.SOPInstanceUID = f"{series_uid}.{number}"
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = f"{modality} bench series"
        ds.InstanceNumber = number
        ds.FrameOfReferenceUID = f"{study_uid(index)}.9"
        ds.ImagePositionPatient = [0, 0, float(number * 5)]
        ds.SliceThickness = 5.0
        if modality == "CT":
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
        _image_module(ds, SMALL_SIZE, 12, _small_pixels(index, number))
        instances.append(
            BenchInstance(study_uid(index), series_uid, ds.SOPInstanceUID, _encode(ds))
        )
    return instances


def mr_slice(slice_index: int, slice_count: int) -> BenchInstance:
    """Slice ``slice_index`` (0-based) of the big 256x256 MR series."""
    ds = Dataset()
    ds.PatientName = "Bench^MRVolume"
    ds.PatientID = MR_PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = mr_study_uid()
    ds.StudyDate = "20230615"
    ds.StudyTime = "120000"
    ds.StudyID = "MR1"
    ds.AccessionNumber = "BAMR0001"
    ds.ReferringPhysicianName = "Ref^Volume"
    ds.StudyDescription = "MR BRAIN VOLUME"
    ds.SOPClassUID = SOP_CLASS_BY_MODALITY["MR"]
    ds.SOPInstanceUID = f"{mr_series_uid()}.{slice_index + 1}"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = mr_series_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"T1 3D {slice_count} slices"
    ds.InstanceNumber = slice_index + 1
    ds.FrameOfReferenceUID = f"{mr_study_uid()}.9"
    ds.ImagePositionPatient = [-102.4, -102.4, float(slice_index)]
    ds.SliceThickness = 1.0
    ds.SliceLocation = float(slice_index)
    yy, xx = np.mgrid[0:MR_SIZE, 0:MR_SIZE]
    radius = 40 + 60 * np.sin(np.pi * (slice_index + 1) / (slice_count + 1))
    head = ((yy - 128) ** 2 + (xx - 128) ** 2 < radius**2) * 2000
    noise = np.random.default_rng(slice_index).integers(0, 96, size=(MR_SIZE, MR_SIZE))
    pixels = head + ((xx + yy + slice_index) % 64) * 8 + noise  # noise: realistic gzip ratio
    _image_module(ds, MR_SIZE, 12, pixels)
    return BenchInstance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, _encode(ds))


RT_PATIENT_ID = f"{BENCH_PATIENT_PREFIX}-RT"
RT_CT_SLICES = 60


def rt_study_context(mr_slices: int) -> RtStudy:
    """The RT study of the benchmark: the analytic phantom of `conformance.generate` (512×512
    CT, 256×256 MR registered to it, RTSTRUCT, RTPLAN, RTDOSE, REG) under a BENCH patient."""
    patient = Patient("Bench^RTPhantom", RT_PATIENT_ID, "19700101", "O")
    # UIDs depend on the slice count: MR slices of another count are other instances.
    return RtStudy(seed=77_000 + mr_slices, ct_slices=RT_CT_SLICES, mr_slices=mr_slices,
                   patient=patient)


def rt_study(mr_slices: int) -> list[BenchInstance]:
    """All instances of the RT study, CT first, then MR, then the RT objects."""
    rt = rt_study_context(mr_slices)
    datasets = [
        *generate.ct_series_datasets(rt),
        *generate.mr_series_datasets(rt),
        generate.rtstruct_dataset(rt),
        generate.rtplan_dataset(rt),
        generate.rtdose_dataset(rt),
        generate.reg_dataset(rt),
    ]
    return [
        BenchInstance(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
            _encode(ds),
        )
        for ds in datasets
    ]
