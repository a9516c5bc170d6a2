"""The conformance test data, generated in memory with pydicom.

Every run uploads its own studies under a fixed UID root plus a run id, so results
never depend on what the server already holds:

* ``main``   -- PatientID ``CONFORMANCE-<run>``, StudyDate 20010203, three series:
  CT (2 native slices), MR (one 3-frame multi-frame instance), OT (RLE Lossless).
* ``utf8``   -- ISO_IR 192, PatientName ``Dvořák^Antonín``, StudyDate 20020304.
* ``latin1`` -- ISO_IR 100, PatientName ``Müller^Renée``, StudyDate 20030405.

Scratch instances for negative STOW tests live in a fourth study (``scratch``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
)

#: Fixed UID root of all conformance-suite data (pydicom's org root + a private arc).
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242"
PATIENT_ID_PREFIX = "CONFORMANCE"

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SC_IMAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MF_WORD_SC_IMAGE = UID("1.2.840.10008.5.1.4.1.1.7.3")

UTF8_NAME = "Dvořák^Antonín"
LATIN1_NAME = "Müller^Renée"
ROWS = COLUMNS = 64


@dataclass
class Instance:
    """One generated instance and the exact bytes that were uploaded."""

    dataset: Dataset
    data: bytes

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def path(self) -> str:
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"

    @property
    def frame_size(self) -> int:
        ds = self.dataset
        return int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * ds.BitsAllocated // 8

    def frame(self, number: int) -> bytes:
        """Native bytes of 1-based frame ``number`` (uncompressed instances only)."""
        size = self.frame_size
        return bytes(self.dataset.PixelData[(number - 1) * size : number * size])


@dataclass
class Study:
    """A generated study: its UID, patient and instances grouped by series."""

    key: str
    uid: str
    patient_id: str
    patient_name: str
    study_date: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def series_uids(self) -> list[str]:
        return list(dict.fromkeys(i.series_uid for i in self.instances))

    def series(self, uid: str) -> list[Instance]:
        return [i for i in self.instances if i.series_uid == uid]

    @property
    def modalities(self) -> set[str]:
        return {str(i.dataset.Modality) for i in self.instances}


@dataclass
class TestData:
    """Everything a run uploads, plus helpers to make extra scratch instances."""

    run_id: str
    studies: dict[str, Study]
    _counter: int = 0

    @property
    def main(self) -> Study:
        return self.studies["main"]

    @property
    def ct(self) -> list[Instance]:
        return [i for i in self.main.instances if i.dataset.Modality == "CT"]

    @property
    def multiframe(self) -> Instance:
        return next(i for i in self.main.instances if i.dataset.Modality == "MR")

    @property
    def compressed(self) -> Instance:
        return next(i for i in self.main.instances if i.dataset.Modality == "OT")

    @property
    def patient_prefix(self) -> str:
        return f"{PATIENT_ID_PREFIX}-{self.run_id}"

    def uid(self, *parts: int | str) -> str:
        return ".".join([UID_ROOT, self.run_id, *map(str, parts)])

    def scratch_instance(self, *, study_uid: str | None = None) -> Instance:
        """A fresh single CT instance in the scratch study (or ``study_uid``)."""
        self._counter += 1
        study = study_uid or self.uid(9)
        ds = _image(
            CT_IMAGE,
            modality="CT",
            patient=(f"{self.patient_prefix}-STOW", "CONFORMANCE^STOW"),
            study_uid=study,
            study_date="20040506",
            series_uid=self.uid(9, 1),
            sop_uid=self.uid(9, 1, 100 + self._counter),
            number=self._counter,
            pixels=_ramp(ROWS, COLUMNS, 1000),
        )
        return Instance(ds, to_bytes(ds))


def new_run_id() -> str:
    """Digits only, no leading zero: unix time plus a random suffix."""
    return f"{int(time.time())}{random.randint(100, 999)}"


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def parse(data: bytes) -> Dataset:
    return dcmread(BytesIO(data))


def _ramp(rows: int, cols: int, scale: int, offset: int = 0) -> np.ndarray:
    """A diagonal gradient so rendering/windowing produce visibly different images."""
    y, x = np.mgrid[0:rows, 0:cols]
    return ((x + y) * scale // (rows + cols - 2) + offset).astype(np.uint16)


def _base(
    sop_class: UID,
    *,
    modality: str,
    patient: tuple[str, str],
    study_uid: str,
    study_date: str,
    series_uid: str,
    sop_uid: str,
    number: int,
    charset: str | None = None,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101112"
    ds.SeriesDate = study_date
    ds.AccessionNumber = f"ACC{study_date}"
    ds.Modality = modality
    ds.InstitutionName = "Conformance Institute"
    ds.ReferringPhysicianName = "REFERRER^CONFORMANCE"
    ds.StudyDescription = "DICOMweb conformance study"
    ds.SeriesDescription = f"Conformance {modality} series"
    ds.PatientName = patient[1]
    ds.PatientID = patient[0]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "031Y"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "CONF1"
    ds.SeriesNumber = {"CT": 1, "MR": 2, "OT": 3}.get(modality, 9)
    ds.InstanceNumber = number
    return ds


def _image(
    sop_class: UID,
    *,
    pixels: np.ndarray,
    bits_stored: int | None = None,
    **kwargs: object,
) -> Dataset:
    ds = _base(sop_class, **kwargs)  # type: ignore[arg-type]
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = 100
    if ds.Modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.ImagePositionPatient = [0, 0, ds.InstanceNumber * 5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = 5
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def build(run_id: str | None = None) -> TestData:
    """Generate the full test data set for one run."""
    run = run_id or new_run_id()
    data = TestData(run, {})
    uid = data.uid
    pid = data.patient_prefix

    main = Study("main", uid(1), pid, "CONFORMANCE^TEST", "20010203")
    common = {"patient": (pid, main.patient_name), "study_uid": main.uid, "study_date": "20010203"}
    for n in (1, 2):
        ds = _image(
            CT_IMAGE,
            modality="CT",
            series_uid=uid(1, 1),
            sop_uid=uid(1, 1, n),
            number=n,
            pixels=_ramp(ROWS, COLUMNS, 2000, offset=500 * n),
            bits_stored=12,
            **common,
        )
        main.instances.append(Instance(ds, to_bytes(ds)))
    frames = np.stack([_ramp(ROWS, COLUMNS, 4000, offset=1000 * f) for f in range(3)])
    mr = _image(
        MF_WORD_SC_IMAGE,
        modality="MR",
        series_uid=uid(1, 2),
        sop_uid=uid(1, 2, 1),
        number=1,
        pixels=frames,
        **common,
    )
    main.instances.append(Instance(mr, to_bytes(mr)))
    ot = _image(
        SC_IMAGE,
        modality="OT",
        series_uid=uid(1, 3),
        sop_uid=uid(1, 3, 1),
        number=1,
        pixels=(_ramp(ROWS, COLUMNS, 255) // 16 * 16).astype(np.uint8),
        **common,
    )
    ot.ConversionType = "WSD"
    ot.compress(RLELossless, encoding_plugin="pydicom")
    main.instances.append(Instance(ot, to_bytes(ot)))
    data.studies["main"] = main

    for key, idx, name, charset, date in (
        ("utf8", 2, UTF8_NAME, "ISO_IR 192", "20020304"),
        ("latin1", 3, LATIN1_NAME, "ISO_IR 100", "20030405"),
    ):
        study = Study(key, uid(idx), f"{pid}-{key.upper()}", name, date)
        ds = _image(
            CT_IMAGE,
            modality="CT",
            patient=(study.patient_id, name),
            study_uid=study.uid,
            study_date=date,
            series_uid=uid(idx, 1),
            sop_uid=uid(idx, 1, 1),
            number=1,
            pixels=_ramp(ROWS, COLUMNS, 2000),
            bits_stored=12,
            charset=charset,
        )
        study.instances.append(Instance(ds, to_bytes(ds)))
        data.studies[key] = study
    return data
