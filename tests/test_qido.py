"""QIDO-RS end to end (PS3.18 10.6; matching per PS3.4 C.2.2.2)."""

from __future__ import annotations

import uuid

import orjson
import pytest
import requests
from factory import image, new_uid
from pydicom.dataset import Dataset

from dicomweb.attributes import Level
from dicomweb.qido import parse_search
from dicomweb.store import query as store_query
from dicomweb.store.database import make_engine

JSON = {"Accept": "application/dicom+json"}


def query(server, path: str, params: str = "") -> requests.Response:
    return requests.get(
        f"{server.url}{path}{'?' + params if params else ''}", headers=JSON, timeout=30
    )


def values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results if "Value" in r.get(tag, {})]


@pytest.fixture
def people(server) -> dict:
    """Studies with distinct names, dates, modalities and character sets, tagged by a
    unique accession number prefix so queries see only them."""
    tag = uuid.uuid4().hex[:6].upper()
    specs = [
        ("Smith^John", "20200105", "083000", "CT", None),
        ("Smithers^Waylon", "20210310", "141500", "MR", None),
        ("SMITH^Jane", "20220720", "235959", "CR", None),
        ("Dvořák^Antonín", "20190101", "120000", "MR", "ISO_IR 192"),
        ("王^小明", "20180606", "090000", "CT", "ISO_IR 192"),
        ("Müller^Jürgen", "20230909", "101010", "US", "ISO_IR 100"),
    ]
    studies = {}
    for index, (name, date, time, modality, charset) in enumerate(specs):
        ds = image(
            patient_name=name,
            study_date=date,
            study_time=time,
            modality=modality,
            charset=charset,
            accession=f"{tag}{index}",
            patient_id=f"{tag}-P{index}",
            description=f"Study {tag} {modality}",
        )
        request_item = Dataset()
        request_item.RequestedProcedureID = f"RP{tag}{index}"
        request_item.ScheduledProcedureStepID = f"SPS{index}"
        ds.RequestAttributesSequence = [request_item]
        assert server.stow(ds).status_code == 200
        studies[name] = ds
    return {"tag": tag, "studies": studies}


def study_uids(response: requests.Response) -> set[str]:
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    return {r["0020000D"]["Value"][0] for r in response.json()}


def uids_of(people: dict, *names: str) -> set[str]:
    return {people["studies"][n].StudyInstanceUID for n in names}


def test_wildcards_and_case_sensitivity(server, people):
    tag = people["tag"]
    found = study_uids(query(server, "/studies", f"AccessionNumber={tag}*&PatientName=Smith*"))
    assert found == uids_of(people, "Smith^John", "Smithers^Waylon")
    found = study_uids(
        query(server, "/studies", f"AccessionNumber={tag}*&PatientName=Smith%5EJ?hn")
    )
    assert found == uids_of(people, "Smith^John")


def test_fuzzy_matching_is_case_insensitive_per_component(server, people):
    tag = people["tag"]
    found = study_uids(
        query(server, "/studies", f"AccessionNumber={tag}*&PatientName=smith&fuzzymatching=true")
    )
    assert found == uids_of(people, "Smith^John", "Smithers^Waylon", "SMITH^Jane")
    found = study_uids(
        query(server, "/studies", f"AccessionNumber={tag}*&PatientName=jane&fuzzymatching=true")
    )
    assert found == uids_of(people, "SMITH^Jane")
    found = study_uids(
        query(server, "/studies", f"AccessionNumber={tag}*&PatientName=smith&fuzzymatching=false")
    )
    assert found == set()


def test_non_ascii_names_percent_decoded_and_returned_intact(server, people):
    tag = people["tag"]
    response = query(server, "/studies", f"AccessionNumber={tag}*&PatientName=Dvo%C5%99%C3%A1k*")
    assert study_uids(response) == uids_of(people, "Dvořák^Antonín")
    assert response.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Dvořák^Antonín"
    response = query(server, "/studies", f"AccessionNumber={tag}*&PatientName=%E7%8E%8B*")
    assert response.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "王^小明"
    response = query(server, "/studies", f"AccessionNumber={tag}*&PatientName=M%C3%BCller*")
    assert study_uids(response) == uids_of(people, "Müller^Jürgen")
    assert response.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"


def test_date_and_time_ranges(server, people):
    tag = people["tag"]
    base = f"AccessionNumber={tag}*"
    assert study_uids(query(server, "/studies", f"{base}&StudyDate=20200101-20211231")) == uids_of(
        people, "Smith^John", "Smithers^Waylon"
    )
    assert study_uids(query(server, "/studies", f"{base}&StudyDate=-20190101")) == uids_of(
        people, "Dvořák^Antonín", "王^小明"
    )
    assert study_uids(query(server, "/studies", f"{base}&StudyDate=20230101-")) == uids_of(
        people, "Müller^Jürgen"
    )
    assert study_uids(query(server, "/studies", f"{base}&StudyDate=20220720")) == uids_of(
        people, "SMITH^Jane"
    )
    assert study_uids(query(server, "/studies", f"{base}&StudyTime=2300-")) == uids_of(
        people, "SMITH^Jane"
    )
    assert study_uids(query(server, "/studies", f"{base}&StudyTime=-09")) == uids_of(
        people, "Smith^John", "王^小明"
    )


def test_uid_lists_comma_and_backslash_and_tag_keys(server, people):
    first, second = (people["studies"][n].StudyInstanceUID for n in ("Smith^John", "王^小明"))
    for separator in (",", "%5C", "\\"):
        found = study_uids(
            query(server, "/studies", f"StudyInstanceUID={first}{separator}{second}")
        )
        assert found == {first, second}
    found = study_uids(query(server, "/studies", f"0020000D={first}"))
    assert found == {first}
    found = study_uids(query(server, "/studies", f"00100020={people['tag']}-P0"))
    assert found == {first}


def test_modalities_in_study_and_computed_attributes(server, people, stored_study):
    tag = people["tag"]
    found = study_uids(query(server, "/studies", f"AccessionNumber={tag}*&ModalitiesInStudy=MR"))
    assert found == uids_of(people, "Smithers^Waylon", "Dvořák^Antonín")
    response = query(server, "/studies", f"StudyInstanceUID={stored_study['study']}")
    study = response.json()[0]
    assert study["00080061"]["Value"] == ["CT", "MR"]
    assert study["00201206"]["Value"] == [2]
    assert study["00201208"]["Value"] == [5]
    series = query(server, f"/studies/{stored_study['study']}/series").json()
    assert [s["00201209"]["Value"][0] for s in series] == [3, 2]


def test_default_attributes_ohif_reads(server, stored_study):
    study = query(server, "/studies", f"StudyInstanceUID={stored_study['study']}").json()[0]
    for keyword_tag in (
        "0020000D",
        "00080020",
        "00080030",
        "00080050",
        "00100020",
        "00100010",
        "00100030",
        "00201208",
        "00081030",
        "00080061",
        "00080090",
        "00081190",
    ):
        assert keyword_tag in study, keyword_tag
    series = query(server, f"/studies/{stored_study['study']}/series").json()[0]
    for keyword_tag in ("0020000E", "00080060", "00200011", "0008103E", "00201209", "00081190"):
        assert keyword_tag in series, keyword_tag
    instance = query(server, f"/studies/{stored_study['study']}/instances").json()[0]
    for keyword_tag in (
        "00080016",
        "00080018",
        "00200013",
        "00280010",
        "00280011",
        "00281050" if False else "00280100",
        "00081190",
    ):
        assert keyword_tag in instance, keyword_tag


def test_includefield_forms(server, stored_study):
    uid = stored_study["study"]
    one_value = query(
        server,
        "/studies",
        f"StudyInstanceUID={uid}&includefield=00081030%2C00080060%2C00100040%2C00181030",
    ).json()[0]
    assert "00100040" in one_value and "00080061" in one_value
    repeated = query(
        server, f"/studies/{uid}/series", "includefield=SeriesDescription&includefield=00200052"
    ).json()[0]
    assert "00200052" in repeated
    everything = query(server, f"/studies/{uid}/instances", "includefield=all").json()[0]
    assert "00280030" in everything and "00200032" in everything


def test_sequence_matching(server, people):
    tag = people["tag"]
    found = study_uids(
        query(server, "/series", f"RequestAttributesSequence.RequestedProcedureID=RP{tag}1")
    )
    assert found == uids_of(people, "Smithers^Waylon")


def test_hierarchy_resources(server, stored_study):
    uid, ct, mr = stored_study["study"], stored_study["ct"], stored_study["mr"]
    assert len(query(server, f"/studies/{uid}/series").json()) == 2
    assert len(query(server, f"/studies/{uid}/instances").json()) == 5
    instances = query(server, f"/studies/{uid}/series/{ct}/instances").json()
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    assert len(query(server, "/series", f"SeriesInstanceUID={mr}").json()) == 1
    assert len(query(server, "/instances", f"StudyInstanceUID={uid}&Modality=MR").json()) == 2
    assert len(query(server, "/studies", f"StudyInstanceUID={uid}&Modality=MR").json()) == 1


def test_limit_offset_and_warning(server, people):
    tag = people["tag"]
    first = query(server, "/studies", f"AccessionNumber={tag}*&limit=4")
    assert len(first.json()) == 4
    assert "additional results" in first.headers["warning"]
    rest = query(server, "/studies", f"AccessionNumber={tag}*&limit=4&offset=4")
    assert len(rest.json()) == 2
    assert "warning" not in rest.headers
    assert study_uids(first) | study_uids(rest) == uids_of(people, *people["studies"])
    again = query(server, "/studies", f"AccessionNumber={tag}*&limit=4")
    assert study_uids(again) == study_uids(first)  # stable order


def test_empty_result_is_204(server):
    response = query(server, "/studies", f"PatientID=nobody-{uuid.uuid4().hex}")
    assert response.status_code == 204


@pytest.mark.parametrize(
    "params, parameter",
    [
        ("NotAnAttribute=1", "NotAnAttribute"),
        ("limit=-5", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("StudyDate=2020-01-01", "StudyDate"),
        ("StudyDate=yesterday", "StudyDate"),
        ("fuzzymatching=maybe", "fuzzymatching"),
        ("includefield=NoSuchKeyword", "includefield"),
        ("SeriesNumber=one", "SeriesNumber"),
        ("StudyInstanceUID=not%20a%20uid", "StudyInstanceUID"),
    ],
)
def test_bad_parameters_give_400_naming_them(server, params, parameter):
    response = query(server, "/studies", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert parameter in error["message"]


def test_absurd_limit_is_capped_not_failed(server, stored_study):
    response = query(
        server, "/studies", f"StudyInstanceUID={stored_study['study']}&limit=999999999"
    )
    assert response.status_code == 200


def test_ohif_study_list_request(server, stored_study):
    response = query(
        server,
        "/studies",
        "limit=101&offset=0&fuzzymatching=true&includefield=00081030%2C00080060%2C00080090%2C00100030",
    )
    assert response.status_code == 200
    assert all(
        "00080061" in s
        for s in response.json()
        if s["0020000D"]["Value"][0] == stored_study["study"]
    )
    unknown = new_uid()
    assert query(server, "/studies", f"StudyInstanceUID={unknown}").status_code == 204


def test_generated_small_studies_are_found_by_name_id_and_modality(server, tmp_path):
    """The conformance generator's studies (ISO_IR 192 and Latin-1 names, many modalities),
    uploaded as files, are each found by exact name, by PatientID and by modality."""
    from pathlib import Path
    from urllib.parse import quote

    from factory import multipart

    from conformance.generate import generate_small_studies

    summaries = generate_small_studies(tmp_path, 24, seed=31337)
    files = sorted(Path(tmp_path).rglob("*.dcm"))
    body, content_type = multipart([f.read_bytes() for f in files])
    stored = requests.post(f"{server.url}/studies", data=body,
                           headers={"Content-Type": content_type}, timeout=120)
    assert stored.status_code == 200, stored.text
    for study in summaries:
        uid = study["study_instance_uid"]
        by_name = query(server, "/studies", "PatientName=" + quote(study["patient_name"]) +
                        f"&StudyInstanceUID={uid}")
        result = by_name.json()[0]
        assert result["00100010"]["Value"][0]["Alphabetic"] == study["patient_name"]
        assert result["00201208"]["Value"] == [study["instance_count"]]
        assert sorted(result["00080061"]["Value"]) == sorted(set(study["modalities"]))
        by_id = query(server, "/studies", f"00100020={quote(study['patient_id'])}")
        assert uid in study_uids(by_id)
        for modality in study["modalities"]:
            assert uid in study_uids(query(server, "/studies", f"ModalitiesInStudy={modality}"
                                           f"&00100020={quote(study['patient_id'])}"))


def test_empty_parameter_name_is_400(server):
    response = requests.get(f"{server.url}/studies?=*", timeout=30)
    assert response.status_code == 400


def test_instance_list_shows_the_new_version_after_overwrite(tmp_path, backend):
    """The instance attributes a list answer keeps in memory (store/results.InstanceParts)
    belong to one stored version: after an overwrite the list shows the new one."""
    from conftest import start_server, stop_server

    server = start_server(tmp_path / "data", backend, env={"DICOMWEB_DUPLICATES": "overwrite"})
    try:
        study, series, sop = new_uid(), new_uid(), new_uid()
        assert server.stow(image(study=study, series=series, sop=sop, instance_number=1)
                           ).status_code == 200
        path = f"/studies/{study}/series/{series}/instances"
        for _ in range(2):  # the second answer comes from the kept part
            assert values(query(server, path).json(), "00200013") == [1]
        assert server.stow(image(study=study, series=series, sop=sop, instance_number=7)
                           ).status_code == 200
        assert values(query(server, path).json(), "00200013") == [7]
        assert values(query(server, path, "includefield=all").json(), "00200013") == [7]
    finally:
        stop_server(server)


STUDY_QUERIES = [
    "AccessionNumber={tag}*",
    "AccessionNumber={tag}*&includefield=all",
    "AccessionNumber={tag}*&includefield=00080062,PatientAge&limit=3&offset=1",
    "AccessionNumber={tag}*&PatientName=smi*&fuzzymatching=true",
    "AccessionNumber={tag}*&ModalitiesInStudy=MR&includefield=00081030,00080060",
    "AccessionNumber={tag}*&StudyDate=20200101-&limit=2",
    # matched on the stored JSON (no column): the page is read again with its counts
    "AccessionNumber={tag}*&SpecificCharacterSet=ISO_IR%20192",
    "AccessionNumber={tag}*&SpecificCharacterSet=ISO_IR%20192&limit=1&offset=1",
]


def test_study_answer_is_the_results_as_dimse_gets_them(server, people, stored_study):
    """An HTTP study list is spliced from kept bytes (store/study_page); it must be exactly
    the JSON of the result objects C-FIND is built from (store/results.render_studies)."""
    engine = make_engine(server.database_url or f"sqlite:///{server.data_dir / 'index.sqlite'}")
    several_series = f"StudyInstanceUID={stored_study['study']}&includefield=all"  # CT and MR
    try:
        for template in [*STUDY_QUERIES, several_series]:
            params = template.format(tag=people["tag"])
            for _ in range(2):  # the second from the kept parts
                response = requests.get(f"{server.url}/studies?{params}", timeout=30,
                                        headers={**JSON, "Accept-Encoding": "identity"})
                assert response.status_code == 200, params
                expected = store_query.search(
                    engine, parse_search(params, Level.STUDY, max_results=10_000), server.url)
                assert response.content == orjson.dumps(expected.rows), params
                assert ("Warning" in response.headers) == expected.more, params
    finally:
        engine.dispose()


def test_study_list_shows_a_study_stored_again_after_delete(server):
    """The kept parts of a study are those of its stored JSON: a study deleted and stored
    again with other attributes is listed with the new ones, and its new counts."""
    study = new_uid()
    accession = "R" + uuid.uuid4().hex[:10].upper()
    params = f"AccessionNumber={accession}&includefield=00081030"

    def listed() -> dict:
        found = query(server, "/studies", params).json()
        assert len(found) == 1
        return found[0]

    assert server.stow(image(study=study, accession=accession, description="First")
                       ).status_code == 200
    for _ in range(2):
        assert listed()["00081030"]["Value"] == ["First"]
    assert requests.delete(f"{server.url}/studies/{study}", timeout=30).status_code in (200, 204)
    assert server.stow(*[image(study=study, accession=accession, description="Second",
                               modality="MR") for _ in range(2)]).status_code == 200
    again = listed()
    assert again["00081030"]["Value"] == ["Second"]
    assert again["00080061"]["Value"] == ["MR"]
    assert again["00201208"]["Value"] == [2]


def test_study_list_counts_what_is_stored_after_it_was_listed(server):
    """A study's listed object is kept with what it was made of: an instance and a series
    stored later (the study's own attributes unchanged) are counted on the next list."""
    study = new_uid()
    accession = "C" + uuid.uuid4().hex[:10].upper()

    def listed() -> dict:
        found = query(server, "/studies", f"AccessionNumber={accession}").json()
        assert len(found) == 1
        return found[0]

    assert server.stow(image(study=study, accession=accession)).status_code == 200
    for _ in range(2):
        first = listed()
    assert first["00201206"]["Value"] == [1] and first["00201208"]["Value"] == [1]
    assert server.stow(image(study=study, accession=accession, modality="MR")
                       ).status_code == 200
    again = listed()
    assert again["00201206"]["Value"] == [2]
    assert again["00201208"]["Value"] == [2]
    assert again["00080061"]["Value"] == sorted({*first["00080061"]["Value"], "MR"})


def test_instance_answer_is_the_results_as_dimse_gets_them(server, stored_study):
    """An HTTP instance list is joined from kept result bytes (store/instance_page); it must
    be exactly the JSON of the result objects C-FIND is built from (render_instances), with
    the study fixed by the path or not."""
    engine = make_engine(server.database_url or f"sqlite:///{server.data_dir / 'index.sqlite'}")
    study = stored_study["study"]
    cases = [(f"/studies/{study}/instances", "", study),
             (f"/studies/{study}/instances", "includefield=all", study),
             (f"/studies/{study}/instances", "limit=2&offset=1", study),
             ("/instances", f"StudyInstanceUID={study}", None),
             ("/instances", f"StudyInstanceUID={study}&includefield=00081030", None)]
    try:
        for _ in range(2):  # the second from the kept results
            for path, params, fixed in cases:
                response = requests.get(f"{server.url}{path}?{params}", timeout=30,
                                        headers={**JSON, "Accept-Encoding": "identity"})
                assert response.status_code == 200, (path, params)
                expected = store_query.search(
                    engine, parse_search(params, Level.INSTANCE, fixed, max_results=10_000),
                    server.url)
                assert response.content == orjson.dumps(expected.rows), (path, params)
    finally:
        engine.dispose()
