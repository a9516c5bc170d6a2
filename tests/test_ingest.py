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


# --- what ingest refuses ------------------------------------------------------------------


def ingest_dataset(tmp_path: Path, ds: Dataset):  # noqa: ANN201
    from factory import to_bytes

    from dicomweb.ingest import ingest_file

    path = tmp_path / "upload.dcm"
    path.write_bytes(to_bytes(ds))
    return ingest_file(path)


def refused(tmp_path: Path, ds: Dataset):  # noqa: ANN201
    from dicomweb.errors import InstanceRejected

    with pytest.raises(InstanceRejected) as caught:
        ingest_dataset(tmp_path, ds)
    return caught.value


def test_native_pixel_data_shorter_than_its_attributes_say_is_refused(tmp_path: Path) -> None:
    from factory import image

    ds = image(rows=16, columns=16)  # 16 x 16 x 1 x 16 bits: 512 bytes
    ds.PixelData = ds.PixelData[:256]  # a cut whose length field was rewritten to match
    rejected = refused(tmp_path, ds)
    assert rejected.reason == 0xA900
    assert "256" in rejected.message and "512" in rejected.message


def test_number_of_frames_beyond_the_native_pixel_data_is_refused(tmp_path: Path) -> None:
    from factory import image

    ds = image(rows=16, columns=16)
    ds.NumberOfFrames = 2**31 - 1
    rejected = refused(tmp_path, ds)
    assert rejected.reason == 0xA900 and str(2**31 - 1) in rejected.message


def test_number_of_frames_beyond_the_fragments_is_refused(tmp_path: Path) -> None:
    source = dcmread(get_testdata_file("JPEG2000.dcm"))
    source.NumberOfFrames = 2**31 - 1
    rejected = refused(tmp_path, source)
    assert rejected.reason == 0xA900 and "fragments" in rejected.message


def test_one_bit_frames_packed_across_byte_boundaries_are_taken(tmp_path: Path) -> None:
    from factory import image

    ds = image(rows=5, columns=5, frames=3)  # 75 bits: 10 bytes, PS3.5 8.1.1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = b"\xaa" * 10
    assert ingest_dataset(tmp_path, ds).instance_row["number_of_frames"] == 3


def test_unknown_vr_is_that_instance_s_failure_in_words(tmp_path: Path) -> None:
    import struct

    from factory import image, to_bytes

    from dicomweb.errors import InstanceRejected
    from dicomweb.ingest import ingest_file

    ds = image()
    raw = to_bytes(ds)
    uid = ds.SOPInstanceUID.encode() + (b"\0" if len(ds.SOPInstanceUID) % 2 else b"")
    element = struct.pack("<HH", 0x0008, 0x0018) + b"%s" + struct.pack("<H", len(uid)) + uid
    path = tmp_path / "uy.dcm"
    path.write_bytes(raw.replace(element % b"UI", element % b"UY"))
    with pytest.raises(InstanceRejected) as caught:
        ingest_file(path)
    assert caught.value.message == (
        "cannot parse the DICOM data set: unknown Value Representation 'UY' in tag (0008,0018)"
    )
