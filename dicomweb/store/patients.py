"""Search at the PATIENT level (PS3.4 C.6.1.1.2, DIMSE's Patient Root model): QIDO's matching
engine applied to the patient attributes each study row keeps, one result per patient.

A patient matches when one of its studies matches, so whatever limits which studies a caller
sees limits the patients too. The attributes returned are those of the patient's latest
stored study.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, and_, func, select, true

from dicomweb import attributes as attrs
from dicomweb.attributes import Level
from dicomweb.errors import BadRequest
from dicomweb.qido import SearchQuery
from dicomweb.store.access import EVERY_STUDY, StudyFilter
from dicomweb.store.query import SearchResult, element, json_match, pick, sql_condition
from dicomweb.store.repository import INSTANCES, SERIES, STUDIES

#: Patient Identification, Demographic and Medical module attributes kept per study.
PATIENT_LEVEL_KEYS = attrs.COMMON_KEYS | attrs.keys(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
)
PATIENT_DEFAULT_KEYS = attrs.COMMON_KEYS | attrs.keys(
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"
)
PATIENT_RELATED_STUDIES = attrs.key("NumberOfPatientRelatedStudies")
PATIENT_RELATED_SERIES = attrs.key("NumberOfPatientRelatedSeries")
PATIENT_RELATED_INSTANCES = attrs.key("NumberOfPatientRelatedInstances")


def search_patients(engine: Engine, query: SearchQuery,
                    access: StudyFilter = EVERY_STUDY) -> SearchResult:
    """One page of patients with a matching study among those `access` lets the caller see;
    their related counts count those studies only."""
    sql_clauses = []
    if not access.unrestricted:
        sql_clauses.append(access.clause(STUDIES.c.study_instance_uid))
    json_conditions = []
    for condition in query.conditions:
        if len(condition.path) != 1 or condition.tag not in PATIENT_LEVEL_KEYS:
            raise BadRequest(
                f"{condition.parameter} is not an attribute of the patient level",
                parameter=condition.parameter,
            )
        clause = sql_condition(Level.STUDY, condition, query.fuzzy)
        if clause is not None:
            sql_clauses.append(clause)
        else:
            json_conditions.append(condition)
    statement = (
        select(STUDIES.c.patient_key, STUDIES.c.study_json)
        .where(and_(true(), *sql_clauses))
        .order_by(STUDIES.c.patient_key, STUDIES.c.created_at.desc())
    )
    limit = query.limit or 0
    wanted = query.offset + limit + 1
    found: dict[str, dict[str, Any]] = {}  # patient key → its latest matching study's JSON
    with engine.connect() as connection:
        for key, study_json in connection.execution_options(yield_per=500).execute(statement):
            if key in found:
                continue
            dataset = orjson.loads(study_json)
            if all(json_match(dataset, c, query.fuzzy) for c in json_conditions):
                found[key] = dataset
                if len(found) == wanted:
                    break
        page = list(found.items())[query.offset : query.offset + limit + 1]
        more = len(page) > limit
        page = page[:limit]
        counts = related_counts(connection, [key for key, _ in page], access)
    rows = []
    for key, dataset in page:
        patient = pick(
            {k: v for k, v in dataset.items() if k in PATIENT_LEVEL_KEYS},
            PATIENT_DEFAULT_KEYS,
            query,
        )
        studies, series, instances = counts.get(key, (0, 0, 0))
        patient[PATIENT_RELATED_STUDIES] = element("IS", studies)
        patient[PATIENT_RELATED_SERIES] = element("IS", series)
        patient[PATIENT_RELATED_INSTANCES] = element("IS", instances)
        rows.append(dict(sorted(patient.items())))
    return SearchResult(rows, more)


def related_counts(connection: Any, keys: list[str],
                   access: StudyFilter) -> dict[str, tuple[int, int, int]]:
    """(studies, series, instances) per patient key, of the studies `access` shows."""
    if not keys:
        return {}
    by_patient = STUDIES.c.patient_key
    wanted = by_patient.in_(keys)
    if not access.unrestricted:
        wanted = and_(wanted, access.clause(STUDIES.c.study_instance_uid))
    study_of_series = SERIES.c.study_instance_uid == STUDIES.c.study_instance_uid
    study_of_instance = INSTANCES.c.study_instance_uid == STUDIES.c.study_instance_uid
    studies = dict(
        connection.execute(
            select(by_patient, func.count()).where(wanted).group_by(by_patient)
        ).all()
    )
    series = dict(
        connection.execute(
            select(by_patient, func.count())
            .select_from(SERIES.join(STUDIES, study_of_series))
            .where(wanted)
            .group_by(by_patient)
        ).all()
    )
    instances = dict(
        connection.execute(
            select(by_patient, func.count())
            .select_from(INSTANCES.join(STUDIES, study_of_instance))
            .where(wanted)
            .group_by(by_patient)
        ).all()
    )
    return {k: (studies.get(k, 0), series.get(k, 0), instances.get(k, 0)) for k in keys}
