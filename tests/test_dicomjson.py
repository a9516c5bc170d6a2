"""The DICOM JSON encoder's fast path gives exactly what pydicom's conversion gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from factory import PYDICOM_FILES, generated_study_files
from pydicom import dcmread

from dicomweb.dicomjson import DicomJsonEncoder


def encode(path: Path, *, fast: bool) -> bytes:
    return orjson.dumps(DicomJsonEncoder("/x", fast=fast).encode(dcmread(path, force=True)))


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_fast_path_matches_pydicom_on_pydicom_test_files(path: Path) -> None:
    try:
        slow = encode(path, fast=False)
    except Exception as exc:  # files pydicom itself cannot convert are not our subject
        pytest.skip(f"pydicom cannot convert {path.name}: {exc}")
    assert encode(path, fast=True) == slow


def test_fast_path_matches_pydicom_on_generated_studies(tmp_path: Path) -> None:
    files = generated_study_files(tmp_path)
    assert len(files) > 20
    for path in files:
        assert encode(path, fast=True) == encode(path, fast=False), path.name


def test_fast_path_reads_a_data_set_with_a_specific_character_set(tmp_path: Path) -> None:
    """pydicom converts (0008,0005) itself while reading; the fast path still takes the other
    elements from their raw bytes (it once fell back to pydicom for every element then)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Müller^Jörg"
    ds.StudyDescription = "Kopf"
    ds.SliceThickness = "1.5"
    ds.Rows = 2
    path = tmp_path / "latin1.dcm"
    ds.save_as(path, enforce_file_format=True)
    read = dcmread(path)
    fast = orjson.dumps(DicomJsonEncoder("/x").encode(read))
    for keyword in ("StudyDescription", "SliceThickness", "Rows"):
        assert isinstance(read.get_item(keyword), RawDataElement), keyword
    assert fast == encode(path, fast=False)
    assert "Müller^Jörg" in fast.decode()


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100", None])
def test_person_names_from_raw_bytes_match_pydicom(tmp_path: Path, charset: str | None) -> None:
    """PN straight from the bytes: several values, '=' groups (some empty), empty values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    utf8 = charset == "ISO_IR 192"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう" if utf8 else "Doe^John^^Dr."
    ds.ReferringPhysicianName = ["Smith^A", "=Ideo", "Jones^B=="]  # pydicom fails on ""
    ds.PerformingPhysicianName = ""
    ds.OperatorsName = "Müller^Jörg " if charset else "Mueller^Joerg"
    path = tmp_path / "pn.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert encode(path, fast=True) == encode(path, fast=False)
