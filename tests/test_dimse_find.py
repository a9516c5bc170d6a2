"""C-FIND: identifiers become QIDO queries (unit), and findscu against a real server finds
what STOW stored (SQLite and PostgreSQL): both models, every level, the matching kinds,
character sets both ways, C-CANCEL, and the PS3.4 statuses of bad queries."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import dcmtk
import factory
import pytest
import requests
from dcmtk import keys, peer, requires_dcmtk, run, statuses
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb.dimse import find

# --- unit: identifier → query --------------------------------------------------------------


def identifier(level: str, **values) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for name, value in values.items():
        setattr(ds, name, value)
    return ds


def test_keys_become_conditions_and_return_keys() -> None:
    ds = identifier("STUDY", PatientName="Doe*", StudyDate="20240101-", StudyDescription="",
                    StudyInstanceUID=["1.2.3", "1.2.4"])
    request = find.parse_identifier(ds, find.STUDY_ROOT, 100)
    conditions = {c.parameter: c.value for c in request.query.conditions}
    assert conditions == {"PatientName": "Doe*", "StudyDate": "20240101-",
                          "StudyInstanceUID": "1.2.3\\1.2.4"}
    assert "00081030" in request.query.include_fields  # universal matching: returned only


def test_unique_key_above_the_level_must_be_one_value() -> None:
    ds = identifier("SERIES", StudyInstanceUID=["1.2.3", "1.2.4"], Modality="CT")
    with pytest.raises(find.IdentifierError) as raised:
        find.parse_identifier(ds, find.STUDY_ROOT, 100)
    assert raised.value.status == 0xA900


@pytest.mark.parametrize("level", ["", "FOO", "PATIENT"])
def test_levels_outside_the_model_are_refused(level: str) -> None:
    with pytest.raises(find.IdentifierError):
        find.parse_identifier(identifier(level), find.STUDY_ROOT, 100)


def test_sequence_item_values_are_matched_inside_the_sequence() -> None:
    item = Dataset()
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepID = ""
    ds = identifier("SERIES", RequestAttributesSequence=Sequence([item]))
    request = find.parse_identifier(ds, find.STUDY_ROOT, 100)
    (condition,) = request.query.conditions
    assert condition.path == ("00400275", "00401001") and condition.value == "RP1"


def test_response_character_set() -> None:
    latin = ["ISO_IR 100"]
    assert find.response_charset(identifier("STUDY", PatientName="Doe^John"), None) is None
    assert find.response_charset(identifier("STUDY", PatientName="Doe^John"), latin) == latin
    assert find.response_charset(identifier("STUDY", PatientName="Müller"), latin) == latin
    assert find.response_charset(identifier("STUDY", PatientName="Müller"), None) == [find.UTF8]
    assert find.response_charset(identifier("STUDY", PatientName="山田"), latin) == [find.UTF8]
    japanese = ["", "ISO 2022 IR 87"]
    assert find.response_charset(identifier("STUDY", PatientName="山田^太郎"), japanese) == japanese


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studies(dimse_server) -> dict:
    """Stored by STOW: patient A with two studies (CT+MR, CT), patient B in ISO_IR 100."""
    tag = uuid.uuid4().hex[:8].upper()
    a, b = f"PA{tag}", f"PB{tag}"
    s1, s2, s3 = factory.new_uid(), factory.new_uid(), factory.new_uid()
    ct1, mr1, ct2, ct3 = (factory.new_uid() for _ in range(4))
    datasets = [
        *(factory.image(study=s1, series=ct1, patient_id=a, patient_name="Doe^John",
                        study_date="20240110", instance_number=i) for i in (1, 2)),
        factory.image(study=s1, series=mr1, patient_id=a, patient_name="Doe^John",
                      study_date="20240110", modality="MR", series_number=2),
        *(factory.image(study=s2, series=ct2, patient_id=a, patient_name="Doe^John",
                        study_date="20240220", instance_number=i) for i in range(1, 31)),
        factory.image(study=s3, series=ct3, patient_id=b, patient_name="Müller^Jürgen",
                      study_date="20230505", charset="ISO_IR 100"),
    ]
    response = dimse_server.http.stow(*datasets)
    assert response.status_code == 200, response.text
    return {"tag": tag, "a": a, "b": b, "s1": s1, "s2": s2, "s3": s3, "ct1": ct1, "mr1": mr1,
            "ct2": ct2}


def find_scu(dimse_server, folder: Path, model: str, *args, aet: str = "TEST"):
    """findscu with the responses extracted: (output, response datasets)."""
    folder.mkdir(parents=True, exist_ok=True)
    output = run("findscu", model, "-X", "-od", str(folder), *peer(dimse_server.port, aet=aet),
                 *args)
    responses = [dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]
    for path in folder.glob("rsp*.dcm"):
        path.unlink()
    return output, responses


def values(responses, keyword: str) -> list:
    return sorted(str(r.get(keyword, "")) for r in responses)


@requires_dcmtk
def test_study_root_study_level(dimse_server, studies, tmp_path) -> None:
    output, found = find_scu(
        dimse_server, tmp_path, "-S",
        *keys(QueryRetrieveLevel="STUDY", PatientID=studies["a"], StudyInstanceUID=None,
              StudyDate=None, StudyTime=None, AccessionNumber=None, PatientName=None,
              StudyID=None, ModalitiesInStudy=None, NumberOfStudyRelatedInstances=None),
    )
    assert statuses(output)[-1] == 0x0000
    assert values(found, "StudyInstanceUID") == sorted([studies["s1"], studies["s2"]])
    first = next(r for r in found if r.StudyInstanceUID == studies["s1"])
    assert first.QueryRetrieveLevel == "STUDY" and first.RetrieveAETitle == "DICOMWEB"
    assert list(first.ModalitiesInStudy) == ["CT", "MR"]
    assert int(first.NumberOfStudyRelatedInstances) == 3
    assert str(first.PatientName) == "Doe^John" and first.StudyDate == "20240110"
    assert "AccessionNumber" in first and "StudyTime" in first and "StudyID" in first


@requires_dcmtk
@pytest.mark.parametrize("matching, expected", [
    ({"PatientName": "Doe*"}, ["s1", "s2"]),  # wildcard
    ({"StudyDate": "20240201-"}, ["s2"]),  # open range
    ({"StudyDate": "20240101-20240131"}, ["s1"]),  # closed range
    ({"ModalitiesInStudy": "MR"}, ["s1"]),
])
def test_matching_kinds(dimse_server, studies, tmp_path, matching, expected) -> None:
    _, found = find_scu(dimse_server, tmp_path, "-S",
                        *keys(QueryRetrieveLevel="STUDY", PatientID=f"P?{studies['tag']}",
                              StudyInstanceUID=None, **matching))
    assert values(found, "StudyInstanceUID") == sorted(studies[k] for k in expected)


@requires_dcmtk
def test_uid_list_matching(dimse_server, studies, tmp_path) -> None:
    _, found = find_scu(dimse_server, tmp_path, "-S",
                        *keys(QueryRetrieveLevel="STUDY",
                              StudyInstanceUID=f"{studies['s1']}\\{studies['s3']}"))
    assert values(found, "StudyInstanceUID") == sorted([studies["s1"], studies["s3"]])


@requires_dcmtk
def test_series_and_image_levels(dimse_server, studies, tmp_path) -> None:
    _, series = find_scu(dimse_server, tmp_path, "-S",
                         *keys(QueryRetrieveLevel="SERIES", StudyInstanceUID=studies["s1"],
                               SeriesInstanceUID=None, Modality=None, SeriesNumber=None,
                               NumberOfSeriesRelatedInstances=None))
    assert values(series, "SeriesInstanceUID") == sorted([studies["ct1"], studies["mr1"]])
    ct = next(r for r in series if r.Modality == "CT")
    assert int(ct.NumberOfSeriesRelatedInstances) == 2 and ct.StudyInstanceUID == studies["s1"]
    _, images = find_scu(dimse_server, tmp_path, "-S",
                         *keys(QueryRetrieveLevel="IMAGE", StudyInstanceUID=studies["s1"],
                               SeriesInstanceUID=studies["ct1"], SOPInstanceUID=None,
                               InstanceNumber=None, SOPClassUID=None))
    assert [int(r.InstanceNumber) for r in sorted(images, key=lambda r: r.InstanceNumber)] == [1, 2]
    assert all(r.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for r in images)


@requires_dcmtk
def test_patient_root(dimse_server, studies, tmp_path) -> None:
    _, patients = find_scu(dimse_server, tmp_path, "-P",
                           *keys(QueryRetrieveLevel="PATIENT", PatientID=studies["a"],
                                 PatientName=None, NumberOfPatientRelatedStudies=None,
                                 NumberOfPatientRelatedInstances=None))
    (patient,) = patients
    assert str(patient.PatientName) == "Doe^John"
    assert int(patient.NumberOfPatientRelatedStudies) == 2
    assert int(patient.NumberOfPatientRelatedInstances) == 33
    _, found = find_scu(dimse_server, tmp_path, "-P",
                        *keys(QueryRetrieveLevel="STUDY", PatientID=studies["a"],
                              StudyInstanceUID=None))
    assert values(found, "StudyInstanceUID") == sorted([studies["s1"], studies["s2"]])


@requires_dcmtk
@pytest.mark.parametrize("charset, encoding", [("ISO_IR 100", "latin-1"),
                                               ("ISO_IR 192", "utf-8")])
def test_specific_character_set_both_ways(dimse_server, studies, tmp_path, charset,
                                          encoding) -> None:
    name = "Müller*".encode(encoding)
    args = [*keys(QueryRetrieveLevel="STUDY", SpecificCharacterSet=charset,
                  PatientID=studies["b"], StudyInstanceUID=None), "-k"]
    folder = tmp_path / "rsp"
    folder.mkdir()
    findscu = dcmtk.dcmtk_tool("findscu") or "findscu"
    subprocess.run([findscu, "-S", "-X", "-od", str(folder), *peer(dimse_server.port),
                    *[a.encode() for a in args], b"PatientName=" + name],
                   env=dcmtk.tool_env(), capture_output=True, timeout=60, check=False)
    (response,) = [dcmread(p) for p in folder.glob("rsp*.dcm")]
    assert response.SpecificCharacterSet == charset
    assert str(response.PatientName) == "Müller^Jürgen"
    _, plain = find_scu(dimse_server, tmp_path / "plain", "-S",
                        *keys(QueryRetrieveLevel="STUDY", PatientID=studies["b"],
                              PatientName=None))
    assert plain[0].SpecificCharacterSet == find.UTF8  # asked in the default repertoire
    assert str(plain[0].PatientName) == "Müller^Jürgen"


@requires_dcmtk
def test_cancel(dimse_server, studies, tmp_path) -> None:
    output, found = find_scu(dimse_server, tmp_path, "-S", "--cancel", "1",
                             *keys(QueryRetrieveLevel="IMAGE", StudyInstanceUID=studies["s2"],
                                   SeriesInstanceUID=studies["ct2"], SOPInstanceUID=None))
    assert statuses(output)[-1] == 0xFE00, output
    assert 1 <= len(found) < 30


@requires_dcmtk
@pytest.mark.parametrize("bad", [
    {"QueryRetrieveLevel": "FOO"},
    {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01"},
    {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2.*", "SOPInstanceUID": None},
    {"QueryRetrieveLevel": "STUDY", "PatientBirthDate": "yesterday"},
    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"},  # UIDs are not wildcards
])
def test_bad_queries_get_a900(dimse_server, tmp_path, bad) -> None:
    output, found = find_scu(dimse_server, tmp_path, "-S", *keys(**bad))
    assert statuses(output)[-1] == 0xA900, output
    assert not found


@requires_dcmtk
def test_who_may_query(dimse_server, studies, tmp_path) -> None:
    query = keys(QueryRetrieveLevel="STUDY", PatientID=studies["a"], StudyInstanceUID=None)
    _, found = find_scu(dimse_server, tmp_path, "-S", *query, aet="READER")
    assert len(found) == 2
    output, found = find_scu(dimse_server, tmp_path, "-S", *query, aet="WRITER")
    assert statuses(output)[-1] == 0x0124 and not found
    # Labels restrict what a peer sees with --study-access labels only (test_dimse_access).
    output, found = find_scu(dimse_server, tmp_path, "-S", *query, aet="LABELLED")
    assert statuses(output)[-1] == 0x0000 and len(found) == 2


@requires_dcmtk
def test_stored_by_dimse_is_found_by_qido_at_once(dimse_server, tmp_path) -> None:
    ds = factory.image()
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert statuses(run("storescu", *peer(dimse_server.port), str(path))) == [0]
    found = requests.get(f"{dimse_server.http.url}/studies/{ds.StudyInstanceUID}/instances",
                         timeout=30)
    assert [r["00080018"]["Value"][0] for r in found.json()] == [ds.SOPInstanceUID]
