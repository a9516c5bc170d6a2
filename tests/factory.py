"""Small DICOM instances made with pydicom, with fresh UIDs, for tests."""

from __future__ import annotations

import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PREFIX = "1.2.826.0.1.3680043.8.498."


#: Every DICOM file pydicom ships (those needing a download are not there offline).
PYDICOM_FILES = sorted(Path(get_testdata_file("CT_small.dcm")).parent.rglob("*.dcm"))


def generated_study_files(folder: Path) -> list[Path]:
    """A small RT study (CT, MR, RTSTRUCT, RTPLAN, RTDOSE, REG) and 12 small studies from the
    conformance generator, written under `folder`."""
    from conformance.generate import generate_rt_study, generate_small_studies

    generate_rt_study(folder / "rt", ct_slices=4, mr_slices=4, seed=99)
    generate_small_studies(folder / "small", 12, seed=99)
    return sorted(folder.rglob("*.dcm"))


def new_uid() -> str:
    return generate_uid(prefix=PREFIX)


def image(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    patient_name: str = "Test^Patient",
    patient_id: str | None = None,
    modality: str = "CT",
    study_date: str = "20240115",
    study_time: str = "101500",
    accession: str = "ACC1",
    description: str = "Test study",
    series_number: int = 1,
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    frames: int = 1,
    charset: str | None = None,
    sop_class: str = CTImageStorage,
    referring: str = "Ref^Doctor",
    position_z: float = 0.0,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    sop = sop or new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id or "PID-" + uuid.uuid4().hex[:8]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.ReferringPhysicianName = referring
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{modality} series"
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = PREFIX + "99.1"
    ds.ImagePositionPatient = [0.0, 0.0, position_z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = (np.arange(rows * columns * frames, dtype=np.uint16) * 7 + instance_number) % 4096
    ds.PixelData = pixels.tobytes()
    return ds


def with_meta(ds: Dataset) -> Dataset:
    """Give a dataset made in memory (e.g. by conformance.generate) its File Meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = "b" + uuid.uuid4().hex
    body = bytearray()
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        body += part + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f'multipart/related; type="{part_type}"; boundary={boundary}'


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related response into (headers, body) parts."""
    boundary = None
    for item in content_type.split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    assert boundary, content_type
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content[:-2] if content.endswith(b"\r\n") else content))
    return parts


def stow_items(response_json: dict, sequence: str) -> list[dict]:
    return response_json.get(sequence, {}).get("Value", [])


REFERENCED = "00081199"
FAILED = "00081198"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
SOP_UID = "00081155"
