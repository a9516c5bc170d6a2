"""Index values read back from the stored DICOM JSON are the ones pydicom's conversion gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from factory import PYDICOM_FILES, generated_study_files
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from dicomweb.dicomjson import DicomJsonEncoder
from dicomweb.ingest import JsonValues, uid_text

TEXT_KEYWORDS = (
    "PatientName",
    "ReferringPhysicianName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDescription",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "Modality",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "FrameOfReferenceUID",
    "PhotometricInterpretation",
    "ImageType",  # multi-valued
    "OtherPatientNames",
)
INTEGER_KEYWORDS = (
    "SeriesNumber",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "NumberOfFrames",
)
UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def pydicom_text(ds: Dataset, keyword: str) -> str:
    """The reference: pydicom's converted value as text (multi-values joined by '\\')."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def pydicom_integer(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read(path: Path) -> tuple[Dataset, JsonValues]:
    ds = dcmread(path, force=True, stop_before_pixels=True)
    values = JsonValues(DicomJsonEncoder("/x").encode(dcmread(path, force=True)))
    return ds, values


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_json_values_match_pydicom(path: Path) -> None:
    try:
        ds, values = read(path)
        expected_text = {k: pydicom_text(ds, k) for k in TEXT_KEYWORDS}
        expected_integer = {k: pydicom_integer(ds, k) for k in INTEGER_KEYWORDS}
    except Exception as exc:  # files pydicom itself cannot convert are not our subject
        pytest.skip(f"pydicom cannot convert {path.name}: {exc}")
    assert {k: values.text(k) for k in TEXT_KEYWORDS} == expected_text
    assert {k: values.integer(k) for k in INTEGER_KEYWORDS} == expected_integer
    for keyword in UID_KEYWORDS:
        assert uid_text(ds, keyword) == str(ds.get(keyword, "") or "").strip()


def test_person_name_groups_keep_their_order(tmp_path: Path) -> None:
    """Alphabetic=Ideographic=Phonetic, as PS3.5 6.2.1 writes them in the file."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = "Wang^XiaoDong=王^小東="  # empty phonetic group kept
    path = tmp_path / "names.dcm"
    ds.save_as(path)
    stored, values = read(path)
    assert values.text("PatientName") == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert values.text("ReferringPhysicianName") == str(stored.ReferringPhysicianName)


def test_generated_studies_match_pydicom(tmp_path: Path) -> None:
    files = generated_study_files(tmp_path)
    assert len(files) > 15
    for path in files:
        ds, values = read(path)
        for keyword in TEXT_KEYWORDS:
            assert values.text(keyword) == pydicom_text(ds, keyword), (path.name, keyword)
        for keyword in INTEGER_KEYWORDS:
            assert values.integer(keyword) == pydicom_integer(ds, keyword), (path.name, keyword)
