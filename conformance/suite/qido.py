"""QIDO-RS: the Search Transaction (PS3.18 10.6, query parameters PS3.18 8.3.4)."""

from __future__ import annotations

from urllib.parse import quote

from .client import DICOM_JSON, describe, media_type
from .context import Context, has_tag, string, values
from .data import LATIN1_NAME, UTF8_NAME
from .registry import check, ensure, unsupported

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
STUDY_DESCRIPTION = "00081030"
PATIENT_AGE = "00101010"  # study-level (Patient Study module), not a default attribute

#: PS3.18 Table 10.6.3-3 (Study), -4 (Series), -5 (Instance) result attributes that
#: our data always has, so a conformant server must return them by default.
STUDY_DEFAULTS = {
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00080061": "ModalitiesInStudy",
    "00080090": "ReferringPhysicianName",
    "00081190": "RetrieveURL",
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00100030": "PatientBirthDate",
    "00100040": "PatientSex",
    "0020000D": "StudyInstanceUID",
    "00200010": "StudyID",
    "00201206": "NumberOfStudyRelatedSeries",
    "00201208": "NumberOfStudyRelatedInstances",
}
SERIES_DEFAULTS = {
    "00080060": "Modality",
    "0008103E": "SeriesDescription",
    "00081190": "RetrieveURL",
    "0020000E": "SeriesInstanceUID",
    "00200011": "SeriesNumber",
    "00201209": "NumberOfSeriesRelatedInstances",
}
INSTANCE_DEFAULTS = {
    "00080016": "SOPClassUID",
    "00080018": "SOPInstanceUID",
    "00081190": "RetrieveURL",
    "00200013": "InstanceNumber",
    "00280008": "NumberOfFrames",
    "00280010": "Rows",
    "00280011": "Columns",
    "00280100": "BitsAllocated",
}


def _ours(ctx: Context) -> str:
    """Query restriction to this run's patients (wildcard on PatientID)."""
    return f"PatientID={ctx.data.patient_prefix}*"


def _uids(ctx: Context, *keys: str) -> set[str]:
    return {ctx.data.studies[k].uid for k in keys}


def _expect_studies(ctx: Context, query: str, present: set[str], absent: set[str]) -> str:
    found = ctx.study_uids(query)
    missing = present - found
    extra = absent & found
    ensure(not missing, f"{query}: {len(missing)} expected study(ies) missing")
    ensure(not extra, f"{query}: {len(extra)} study(ies) returned that should not match")
    return f"{len(found)} result(s), matching as expected"


def _study(ctx: Context, key: str = "main", query: str = "") -> dict[str, object]:
    study = ctx.require_uploaded(key)
    q = f"StudyInstanceUID={study.uid}" + (f"&{query}" if query else "")
    results = ctx.search("studies", q)
    ensure(len(results) == 1, f"{len(results)} results for StudyInstanceUID={study.uid[-12:]}")
    return results[0]


# -- matching (PS3.18 8.3.4.1) -------------------------------------------------


@check("qido.search-studies", "PS3.18 10.6.1", "Search for studies returns DICOM JSON")
def search_studies_returns_dicom_json(ctx: Context) -> str:
    """PS3.18 10.6.3: 200 with an application/dicom+json array of study datasets."""
    ctx.require_uploaded()
    resp = ctx.client.qido("studies", f"StudyInstanceUID={ctx.data.main.uid}")
    ensure(resp.status_code == 200, f"expected 200, got {describe(resp)}")
    ctype = media_type(resp.headers.get("Content-Type", ""))
    ensure(ctype in (DICOM_JSON, "application/json"), f"Content-Type {ctype!r}")
    ds = _study(ctx)
    ensure(string(ds, STUDY_UID) == ctx.data.main.uid, "StudyInstanceUID differs")
    return f"Content-Type {ctype}"


@check("qido.match-single-value", "PS3.18 8.3.4.1", "Single value matching on PatientID")
def search_single_value_matching(ctx: Context) -> str:
    ctx.require_uploaded()
    pid = ctx.data.main.patient_id
    return _expect_studies(ctx, f"PatientID={pid}", _uids(ctx, "main"), _uids(ctx, "utf8"))


@check("qido.match-uid", "PS3.18 8.3.4.1", "Single UID matching on StudyInstanceUID")
def search_uid_matching(ctx: Context) -> str:
    ctx.require_uploaded()
    found = ctx.study_uids(f"StudyInstanceUID={ctx.data.main.uid}")
    ensure(found == _uids(ctx, "main"), f"got {len(found)} studies instead of exactly 1")
    return "exactly 1 study"


@check("qido.match-tag-number", "PS3.18 8.3.4.1", "Attribute given by tag number (00100020=)")
def search_by_tag_number_key(ctx: Context) -> str:
    """PS3.18 8.3.4.1: {attributeID} may be a keyword or an 8-hex-digit tag."""
    ctx.require_uploaded()
    query = f"00100020={ctx.data.main.patient_id}"
    return _expect_studies(ctx, query, _uids(ctx, "main"), _uids(ctx, "utf8", "latin1"))


@check("qido.wildcard-star", "PS3.18 8.3.4.1.1", "Wildcard * matching")
def search_wildcard_star(ctx: Context) -> str:
    ctx.require_uploaded()
    prefix = ctx.data.patient_prefix
    _expect_studies(ctx, f"PatientID={prefix}*", _uids(ctx, "main", "utf8", "latin1"), set())
    _expect_studies(ctx, f"PatientID={prefix}X*", set(), _uids(ctx, "main", "utf8", "latin1"))
    # No "^" in the pattern: percent-decoding is tested on its own (qido.percent-encoded-*).
    query = f"PatientName=CONFORM*&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "main"), _uids(ctx, "utf8"))


@check("qido.wildcard-question", "PS3.18 8.3.4.1.1", "Wildcard ? matching")
def search_wildcard_question_mark(ctx: Context) -> str:
    ctx.require_uploaded()
    query = f"PatientID={ctx.data.patient_prefix}-UTF?"
    return _expect_studies(ctx, query, _uids(ctx, "utf8"), _uids(ctx, "main", "latin1"))


@check("qido.uid-list-comma", "PS3.18 8.3.4.1", "UID list matching, comma-separated")
def search_uid_list_comma(ctx: Context) -> str:
    ctx.require_uploaded()
    main, utf8 = ctx.data.main.uid, ctx.data.studies["utf8"].uid
    query = f"StudyInstanceUID={main},{utf8}"
    return _expect_studies(ctx, query, _uids(ctx, "main", "utf8"), _uids(ctx, "latin1"))


@check("qido.uid-list-backslash", "PS3.18 8.3.4.1", "UID list matching, backslash-separated")
def search_uid_list_backslash(ctx: Context) -> str:
    ctx.require_uploaded()
    main, utf8 = ctx.data.main.uid, ctx.data.studies["utf8"].uid
    query = f"StudyInstanceUID={main}%5C{utf8}"
    return _expect_studies(ctx, query, _uids(ctx, "main", "utf8"), _uids(ctx, "latin1"))


@check("qido.date-range", "PS3.18 8.3.4.1.1", "Date range matching (closed range)")
def search_date_range(ctx: Context) -> str:
    ctx.require_uploaded("utf8")
    query = f"StudyDate=20020101-20021231&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "utf8"), _uids(ctx, "main", "latin1"))


@check("qido.date-range-open-start", "PS3.18 8.3.4.1.1", "Date range with open start (-date)")
def search_date_range_open_start(ctx: Context) -> str:
    ctx.require_uploaded()
    query = f"StudyDate=-20011231&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "main"), _uids(ctx, "utf8", "latin1"))


@check("qido.date-range-open-end", "PS3.18 8.3.4.1.1", "Date range with open end (date-)")
def search_date_range_open_end(ctx: Context) -> str:
    ctx.require_uploaded("latin1")
    query = f"StudyDate=20030101-&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "latin1"), _uids(ctx, "main", "utf8"))


@check("qido.fuzzymatching", "PS3.18 8.3.4.2", "fuzzymatching=true is accepted")
def search_fuzzymatching_accepted(ctx: Context) -> str:
    ctx.require_uploaded()
    query = f"PatientName=CONFORMANCE*&fuzzymatching=true&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "main"), set())


@check(
    "qido.percent-encoded-value",
    "PS3.18 8.3.1",
    "Percent-encoded UTF-8 value (PatientName=Dvo%C5%99%C3%A1k*)",
)
def search_percent_encoded_utf8_value(ctx: Context) -> str:
    """PS3.18 8.3.1: query values are percent-encoded UTF-8 and must be decoded."""
    ctx.require_uploaded("utf8")
    query = f"PatientName={quote('Dvořák')}*&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "utf8"), _uids(ctx, "main", "latin1"))


@check(
    "qido.percent-encoded-caret",
    "PS3.18 8.3.1",
    "Percent-encoded component separator (PatientName=CONFORMANCE%5ETEST)",
)
def search_percent_encoded_caret(ctx: Context) -> str:
    """PS3.18 8.3.1: ``^`` is not allowed raw in a URI, so clients send ``%5E``."""
    ctx.require_uploaded()
    query = f"PatientName=CONFORMANCE%5ETEST&{_ours(ctx)}"
    return _expect_studies(ctx, query, _uids(ctx, "main"), _uids(ctx, "utf8"))


@check("qido.modalities-in-study-match", "PS3.18 10.6.1.2.3", "Matching on ModalitiesInStudy")
def search_modalities_in_study_matching(ctx: Context) -> str:
    ctx.require_uploaded()
    _expect_studies(ctx, f"ModalitiesInStudy=MR&{_ours(ctx)}", _uids(ctx, "main"), set())
    return _expect_studies(ctx, f"ModalitiesInStudy=US&{_ours(ctx)}", set(), _uids(ctx, "main"))


# -- returned attributes (PS3.18 8.3.4.3, 10.6.3.3) -----------------------------


@check("qido.utf8-name", "PS3.18 F.2", "ISO_IR 192 PatientName returned intact in UTF-8 JSON")
def search_returns_utf8_name_intact(ctx: Context) -> str:
    name = string(_study(ctx, "utf8"), "00100010")
    ensure(name == UTF8_NAME, f"PatientName {name!r} != {UTF8_NAME!r}")
    return name


@check("qido.latin1-name", "PS3.18 F.2", "ISO_IR 100 PatientName transcoded to UTF-8 JSON")
def search_returns_latin1_name_transcoded(ctx: Context) -> str:
    """PS3.18 F.2: DICOM JSON is always UTF-8, whatever the stored character set."""
    name = string(_study(ctx, "latin1"), "00100010")
    ensure(name == LATIN1_NAME, f"PatientName {name!r} != {LATIN1_NAME!r}")
    return name


def _includefield(ctx: Context, query: str, tags: tuple[str, ...]) -> str:
    ds = _study(ctx, "main", query)
    missing = [t for t in tags if not has_tag(ds, t)]
    ensure(not missing, f"{query}: {', '.join(missing)} not returned")
    return f"{', '.join(tags)} returned"


@check("qido.includefield-tag", "PS3.18 8.3.4.3", "includefield by tag number")
def search_includefield_tag(ctx: Context) -> str:
    return _includefield(ctx, f"includefield={STUDY_DESCRIPTION}", (STUDY_DESCRIPTION,))


@check("qido.includefield-keyword", "PS3.18 8.3.4.3", "includefield by keyword")
def search_includefield_keyword(ctx: Context) -> str:
    return _includefield(ctx, "includefield=StudyDescription", (STUDY_DESCRIPTION,))


@check("qido.includefield-all", "PS3.18 8.3.4.3", "includefield=all")
def search_includefield_all(ctx: Context) -> str:
    return _includefield(ctx, "includefield=all", (STUDY_DESCRIPTION,))


@check("qido.includefield-repeated", "PS3.18 8.3.4.3", "includefield repeated")
def search_includefield_repeated(ctx: Context) -> str:
    query = f"includefield={STUDY_DESCRIPTION}&includefield={PATIENT_AGE}"
    return _includefield(ctx, query, (STUDY_DESCRIPTION, PATIENT_AGE))


@check("qido.includefield-comma", "PS3.18 8.3.4.3", "includefield comma-separated list")
def search_includefield_comma_list(ctx: Context) -> str:
    query = f"includefield={STUDY_DESCRIPTION},{PATIENT_AGE}"
    return _includefield(ctx, query, (STUDY_DESCRIPTION, PATIENT_AGE))


@check(
    "qido.includefield-comma-encoded",
    "PS3.18 8.3.4.3",
    "includefield with one %2C-separated value",
)
def search_includefield_percent_encoded_comma(ctx: Context) -> str:
    query = f"includefield={STUDY_DESCRIPTION}%2C{PATIENT_AGE}"
    return _includefield(ctx, query, (STUDY_DESCRIPTION, PATIENT_AGE))


def _missing_defaults(ds: dict[str, object], required: dict[str, str]) -> list[str]:
    return [name for tag, name in required.items() if not has_tag(ds, tag)]


@check("qido.study-default-attributes", "PS3.18 10.6.3.3.1", "Study results: Table 10.6.3-3")
def search_study_default_attributes(ctx: Context) -> str:
    missing = _missing_defaults(_study(ctx), STUDY_DEFAULTS)
    ensure(not missing, f"missing {', '.join(missing)}")
    return f"all {len(STUDY_DEFAULTS)} attributes present"


@check("qido.series-default-attributes", "PS3.18 10.6.3.3.2", "Series results: Table 10.6.3-4")
def search_series_default_attributes(ctx: Context) -> str:
    study = ctx.require_uploaded()
    results = ctx.search(f"studies/{study.uid}/series")
    ensure(results, "no series returned")
    missing = sorted({m for ds in results for m in _missing_defaults(ds, SERIES_DEFAULTS)})
    ensure(not missing, f"missing {', '.join(missing)}")
    return f"all {len(SERIES_DEFAULTS)} attributes present in {len(results)} series"


@check("qido.instance-default-attributes", "PS3.18 10.6.3.3.3", "Instance results: Table 10.6.3-5")
def search_instance_default_attributes(ctx: Context) -> str:
    inst = ctx.data.multiframe
    ctx.require_uploaded()
    results = ctx.search(f"studies/{inst.study_uid}/series/{inst.series_uid}/instances")
    ensure(len(results) == 1, f"{len(results)} instances in the multi-frame series")
    missing = _missing_defaults(results[0], INSTANCE_DEFAULTS)
    ensure(not missing, f"missing {', '.join(missing)}")
    return f"all {len(INSTANCE_DEFAULTS)} attributes present"


# -- computed attributes (PS3.18 10.6.3.3, PS3.4 C.3.4) --------------------------


@check("qido.modalities-in-study", "PS3.18 10.6.3.3.1", "ModalitiesInStudy computed")
def search_modalities_in_study_value(ctx: Context) -> str:
    got = {str(v) for v in values(_study(ctx), "00080061")}
    expected = ctx.data.main.modalities
    ensure(got == expected, f"ModalitiesInStudy {sorted(got)} != {sorted(expected)}")
    return "\\".join(sorted(got))


@check(
    "qido.number-of-study-related",
    "PS3.18 10.6.3.3.1",
    "NumberOfStudyRelatedSeries / NumberOfStudyRelatedInstances computed",
)
def search_number_of_study_related(ctx: Context) -> str:
    ds = _study(ctx)
    main = ctx.data.main
    series, instances = values(ds, "00201206"), values(ds, "00201208")
    ensure(series, "NumberOfStudyRelatedSeries (0020,1206) absent")
    ensure(instances, "NumberOfStudyRelatedInstances (0020,1208) absent")
    ensure(int(series[0]) == len(main.series_uids), f"series {series[0]} != 3")  # type: ignore[call-overload]
    ensure(int(instances[0]) == len(main.instances), f"instances {instances[0]} != 4")  # type: ignore[call-overload]
    return f"{series[0]} series, {instances[0]} instances"


@check(
    "qido.number-of-series-related",
    "PS3.18 10.6.3.3.2",
    "NumberOfSeriesRelatedInstances computed",
)
def search_number_of_series_related(ctx: Context) -> str:
    ct = ctx.data.ct
    ctx.require_uploaded()
    results = ctx.search(
        f"studies/{ct[0].study_uid}/series", f"SeriesInstanceUID={ct[0].series_uid}"
    )
    ensure(len(results) == 1, f"{len(results)} results for the CT series")
    count = values(results[0], "00201209")
    ensure(count, "NumberOfSeriesRelatedInstances (0020,1209) absent")
    ensure(str(count[0]) == str(len(ct)), f"{count[0]} != {len(ct)}")
    return f"{count[0]} instances"


# -- resources (PS3.18 10.6.1) ---------------------------------------------------


@check("qido.search-series-of-study", "PS3.18 10.6.1", "Search for series of a study")
def search_series_of_study(ctx: Context) -> str:
    study = ctx.require_uploaded()
    got = {string(ds, SERIES_UID) for ds in ctx.search(f"studies/{study.uid}/series")}
    ensure(got == set(study.series_uids), f"{len(got)} series instead of {len(study.series_uids)}")
    return f"{len(got)} series"


@check("qido.search-instances-of-study", "PS3.18 10.6.1", "Search for instances of a study")
def search_instances_of_study(ctx: Context) -> str:
    study = ctx.require_uploaded()
    resp = ctx.client.qido(f"studies/{study.uid}/instances")
    if resp.status_code in (404, 405, 501):
        unsupported(describe(resp))
    got = {string(ds, SOP_UID) for ds in ctx.search(f"studies/{study.uid}/instances")}
    expected = {i.sop_uid for i in study.instances}
    ensure(got == expected, f"{len(got)} instances instead of {len(expected)}")
    return f"{len(got)} instances"


@check("qido.search-all-series", "PS3.18 10.6.1", "Search for all series (relational)")
def search_all_series(ctx: Context) -> str:
    study = ctx.require_uploaded()
    resp = ctx.client.qido("series", f"StudyInstanceUID={study.uid}")
    if resp.status_code in (404, 405, 501):
        unsupported(describe(resp))
    got = {string(ds, SERIES_UID) for ds in ctx.search("series", f"StudyInstanceUID={study.uid}")}
    ensure(got == set(study.series_uids), f"{len(got)} series instead of {len(study.series_uids)}")
    return f"{len(got)} series"


@check("qido.search-all-instances", "PS3.18 10.6.1", "Search for all instances (relational)")
def search_all_instances(ctx: Context) -> str:
    study = ctx.require_uploaded()
    query = f"StudyInstanceUID={study.uid}"
    resp = ctx.client.qido("instances", query)
    if resp.status_code in (404, 405, 501):
        unsupported(describe(resp))
    got = {string(ds, SOP_UID) for ds in ctx.search("instances", query)}
    expected = {i.sop_uid for i in study.instances}
    ensure(got == expected, f"{len(got)} instances instead of {len(expected)}")
    return f"{len(got)} instances"


# -- paging and errors (PS3.18 8.3.4.4, 10.6.3.1) -----------------------------------


@check("qido.limit-offset", "PS3.18 8.3.4.4", "limit and offset page through results")
def search_limit_and_offset(ctx: Context) -> str:
    ctx.require_uploaded()
    first = ctx.search("studies", f"{_ours(ctx)}&limit=1")
    second = ctx.search("studies", f"{_ours(ctx)}&limit=1&offset=1")
    everything = ctx.study_uids(_ours(ctx))
    ensure(len(everything) >= 3, f"only {len(everything)} studies without limit")
    ensure(len(first) == 1, f"limit=1 returned {len(first)} results")
    ensure(len(second) == 1, f"limit=1&offset=1 returned {len(second)} results")
    ensure(string(first[0], STUDY_UID) != string(second[0], STUDY_UID), "offset ignored")
    return f"pages of 1 out of {len(everything)}"


@check("qido.limit-warning", "PS3.18 8.3.4.4", "Warning header when results are truncated")
def search_truncated_results_warning(ctx: Context) -> str:
    """PS3.18 8.3.4.4: when there are more results than ``limit``, the response carries a
    ``Warning: 299 ...`` header saying so."""
    ctx.require_uploaded()
    resp = ctx.client.qido("studies", f"{_ours(ctx)}&limit=1")
    ensure(resp.status_code == 200, describe(resp))
    warning = resp.headers.get("Warning", "")
    ensure(warning, "no Warning header on a truncated result")
    ensure(warning.startswith("299"), f"Warning {warning!r} does not start with 299")
    return warning[:80]


@check("qido.unknown-attribute-400", "PS3.18 10.6.3.1", "Unknown query attribute gives 400")
def search_unknown_attribute_rejected(ctx: Context) -> str:
    resp = ctx.client.qido("studies", "NoSuchKeywordXyz=1")
    ensure(resp.status_code == 400, f"expected 400, got {describe(resp)}")
    return "400"


@check("qido.malformed-limit-400", "PS3.18 10.6.3.1", "Malformed limit value gives 400")
def search_malformed_limit_rejected(ctx: Context) -> str:
    resp = ctx.client.qido("studies", "limit=abc")
    ensure(resp.status_code == 400, f"expected 400, got {describe(resp)}")
    return "400"


@check("qido.malformed-date-400", "PS3.18 10.6.3.1", "Malformed date range gives 400")
def search_malformed_date_rejected(ctx: Context) -> str:
    resp = ctx.client.qido("studies", "StudyDate=2001-02-03-2004")
    ensure(resp.status_code == 400, f"expected 400, got {describe(resp)}")
    return "400"
