"""QIDO on the index: matching keys become SQL on indexed columns (lower-level keys become
EXISTS subqueries); keys without a column are matched on the stored DICOM JSON."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
)

from dicomweb import attributes as attrs
from dicomweb.attributes import Kind, Level
from dicomweb.errors import BadRequest
from dicomweb.qido import Condition, SearchQuery, split_list
from dicomweb.store.access import EVERY_STUDY, StudyFilter
from dicomweb.store.repository import INSTANCES, SERIES, STUDIES

TABLES = {Level.STUDY: STUDIES, Level.SERIES: SERIES, Level.INSTANCE: INSTANCES}
DEPTH = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
ESCAPE = "!"


@dataclass
class SearchResult:
    rows: list[dict[str, Any]]
    more: bool  # results exist past this page


def like_pattern(value: str) -> str:
    escaped = (
        value.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")
    )
    return escaped.replace("*", "%").replace("?", "_")


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def text_match(column: Any, value: str) -> ColumnElement[bool]:
    if value == '""':
        return column == ""
    options = [v for v in value.split("\\") if v] or [value]
    clauses = [
        column.like(like_pattern(v), escape=ESCAPE) if has_wildcard(v) else column == v
        for v in options
    ]
    return or_(*clauses)


def fuzzy_name_match(fold_column: Any, value: str) -> ColumnElement[bool]:
    """Case-insensitive, per name component (PS3.4 C.2.2.2.1 leaves fuzzy matching to the
    server): the value matches the whole name or the start of any component."""
    pattern = like_pattern(value.casefold())
    if not has_wildcard(value):
        pattern += "%"
    return or_(
        fold_column.like(pattern, escape=ESCAPE),
        fold_column.like("%^" + pattern, escape=ESCAPE),
        fold_column.like("% " + pattern, escape=ESCAPE),
        fold_column.like("%=" + pattern, escape=ESCAPE),
    )


def range_match(column: Any, value: str, pad: Callable[[str, bool], str]) -> ColumnElement[bool]:
    low, dash, high = value.partition("-")
    if not dash:
        return column == pad(low, False) if len(low) >= 6 else column.like(low + "%")
    clauses = [column != ""]
    if low:
        clauses.append(column >= pad(low, False))
    if high:
        clauses.append(column <= pad(high, True))
    return and_(*clauses)


def pad_date(value: str, upper: bool) -> str:
    return value


def pad_time(value: str, upper: bool) -> str:
    """A range end with fewer components covers the whole unit: -10 means up to 10:59:59."""
    value = value.replace(":", "")
    if not upper:
        return value
    full = "235959.999999"
    return value + full[len(value) :]


def column_condition(
    column: Any, kind: Kind, value: str, fuzzy: bool, fold: Any
) -> ColumnElement[bool]:
    if kind in (Kind.UID, Kind.SOP_CLASSES):
        return column.in_(split_list(value))
    if kind == Kind.INT:
        return column.in_([int(v) for v in split_list(value)])
    if kind == Kind.DATE:
        return range_match(column, value, pad_date)
    if kind == Kind.TIME:
        return range_match(column, value.replace(":", ""), pad_time)
    if kind == Kind.PN and fuzzy and fold is not None:
        return fuzzy_name_match(fold, value)
    if kind == Kind.MODALITIES:
        return (
            column.in_(split_list(value)) if not has_wildcard(value) else text_match(column, value)
        )
    return text_match(column, value)


def sql_condition(level: Level, condition: Condition, fuzzy: bool) -> ColumnElement[bool] | None:
    """SQL for a matching key at query level `level`; None when it has no column."""
    if len(condition.path) != 1 or condition.tag not in attrs.SEARCHABLE:
        return None
    searchable = attrs.SEARCHABLE[condition.tag]
    attribute_level = searchable.level
    kind = searchable.kind
    if kind == Kind.MODALITIES:
        attribute_level = Level.SERIES
    elif kind == Kind.SOP_CLASSES:
        attribute_level = Level.INSTANCE
    table = TABLES[attribute_level]
    column = table.c[searchable.column]
    fold = table.c[searchable.fold_column] if searchable.fold_column else None
    clause = column_condition(column, kind, condition.value, fuzzy, fold)
    if DEPTH[attribute_level] <= DEPTH[level]:
        return clause  # the table is the query's own or joined in
    # A lower-level key at a higher level: some child must match (e.g. ModalitiesInStudy).
    parent = TABLES[level]
    link = (
        table.c.study_instance_uid == parent.c.study_instance_uid
        if level == Level.STUDY
        else table.c.series_instance_uid == parent.c.series_instance_uid
    )
    return exists().where(link, clause)


def json_level(tag: str) -> Level:
    if tag in attrs.STUDY_LEVEL_KEYS:
        return Level.STUDY
    if tag in attrs.SERIES_LEVEL_KEYS:
        return Level.SERIES
    return Level.INSTANCE


# --- matching on stored DICOM JSON (attributes without a column; sequence matching) -------


def json_values(dataset: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    element = dataset.get(path[0])
    if not element:
        return []
    values = element.get("Value", [])
    if len(path) > 1:
        found: list[str] = []
        for item in values:
            if isinstance(item, dict):
                found.extend(json_values(item, path[1:]))
        return found
    out = []
    for value in values:
        if isinstance(value, dict):  # PN
            out.append(
                "=".join(
                    value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")
                ).rstrip("=")
            )
        else:
            out.append(str(value))
    return out


def wildcard_regex(value: str, fold: bool) -> Any:
    import re

    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile(pattern + r"\Z", re.IGNORECASE if fold else 0 | re.DOTALL)


def json_match(dataset: dict[str, Any], condition: Condition, fuzzy: bool) -> bool:
    values = json_values(dataset, condition.path)
    wanted = condition.value
    if wanted == '""':
        return not values or all(v == "" for v in values)
    options = split_list(wanted) if "\\" in wanted or "," in wanted else [wanted]
    for option in options:
        if "-" in option and option.replace("-", "").replace(".", "").isdigit():
            low, _, high = option.partition("-")
            if any(v and (not low or v >= low) and (not high or v <= high) for v in values):
                return True
            continue
        regex = wildcard_regex(option, fuzzy)
        if any(regex.match(v) for v in values):
            return True
    return False


# --- the search ---------------------------------------------------------------------------


def search(engine: Engine, query: SearchQuery, base_url: str,
           access: StudyFilter = EVERY_STUDY) -> SearchResult:
    """One page of matches among the studies `access` lets the caller see: the filter is part
    of the statement, so rows, pages, the "more" flag and every count cover only those."""
    level = query.level
    table = TABLES[level]
    sql_clauses: list[ColumnElement[bool]] = []
    json_conditions: list[Condition] = []
    for condition in query.conditions:
        clause = sql_condition(level, condition, query.fuzzy)
        if clause is not None:
            sql_clauses.append(clause)
            continue
        if DEPTH[json_level(condition.tag)] > DEPTH[level]:
            raise BadRequest(
                f"{condition.parameter} is not an attribute of the {level.value} level and cannot "
                f"be matched there",
                parameter=condition.parameter,
            )
        json_conditions.append(condition)

    # Only the columns a result is made of: no datetime or frame-range columns to convert.
    statement = select(*(table.c[name] for name in RESULT_COLUMNS[level]))
    if level in (Level.SERIES, Level.INSTANCE):
        statement = statement.join(
            STUDIES, STUDIES.c.study_instance_uid == table.c.study_instance_uid
        ).add_columns(STUDIES.c.study_json)
    if level == Level.INSTANCE:
        statement = statement.join(
            SERIES, SERIES.c.series_instance_uid == table.c.series_instance_uid
        ).add_columns(SERIES.c.series_json)
    if query.study:
        sql_clauses.append(table.c.study_instance_uid == query.study)
    if query.series:
        sql_clauses.append(table.c.series_instance_uid == query.series)
    if not access.unrestricted:
        sql_clauses.append(access.clause(table.c.study_instance_uid))
    statement = statement.where(and_(true(), *sql_clauses)).order_by(*ORDER[level]())
    limit = query.limit or 0
    if not json_conditions:
        statement = statement.offset(query.offset).limit(limit + 1)
    with engine.connect() as connection:
        # fetchall: one driver call for the page, not one fetchone per row.
        rows = list(connection.execute(statement).mappings().all())
        if json_conditions:
            rows = [
                r
                for r in rows
                if all(
                    json_match(row_json(r, c.tag, level), c, query.fuzzy) for c in json_conditions
                )
            ]
            rows = rows[query.offset : query.offset + limit + 1]
        more = len(rows) > limit
        rows = rows[:limit]
        results = RENDER[level](connection, rows, query, base_url)
    return SearchResult(results, more)


RESULT_COLUMNS = {
    Level.STUDY: ("study_instance_uid", "study_json"),
    Level.SERIES: ("study_instance_uid", "series_instance_uid", "series_json"),
    Level.INSTANCE: ("study_instance_uid", "series_instance_uid", "sop_instance_uid",
                     "metadata_json"),
}

ORDER: dict[Level, Callable[[], list[Any]]] = {
    Level.STUDY: lambda: [
        STUDIES.c.study_date.desc(),
        STUDIES.c.study_time.desc(),
        STUDIES.c.study_instance_uid,
    ],
    Level.SERIES: lambda: [
        SERIES.c.study_instance_uid,
        SERIES.c.series_number,
        SERIES.c.series_instance_uid,
    ],
    Level.INSTANCE: lambda: [
        INSTANCES.c.series_instance_uid,
        INSTANCES.c.instance_number,
        INSTANCES.c.sop_instance_uid,
    ],
}


def row_json(row: Any, tag: str, level: Level) -> dict[str, Any]:
    which = json_level(tag)
    if which == Level.STUDY:
        return orjson.loads(row["study_json"])
    if which == Level.SERIES and level != Level.STUDY:
        return orjson.loads(row["series_json"])
    if level == Level.INSTANCE:
        return orjson.loads(row["metadata_json"])
    return {}


def pick(dataset: dict[str, Any], defaults: frozenset[str], query: SearchQuery) -> dict[str, Any]:
    if query.include_all:
        return {k: v for k, v in dataset.items() if "BulkDataURI" not in v}
    wanted = defaults | query.include_fields
    if len(wanted) < len(dataset):  # an instance holds ~100 attributes; ~10 are asked for
        return {k: dataset[k] for k in wanted if k in dataset}
    return {k: v for k, v in dataset.items() if k in wanted}


def picked(seen: dict[str, dict[str, Any]], uid: str, stored: bytes, defaults: frozenset[str],
           query: SearchQuery) -> dict[str, Any]:
    """`pick` of a study's or series' JSON, parsed once per page: the 392 instances of a
    series carry the same two. The caller copies it before adding to it."""
    found = seen.get(uid)
    if found is None:
        found = seen[uid] = pick(orjson.loads(stored), defaults, query)
    return found


def element(vr: str, *values: Any) -> dict[str, Any]:
    values = tuple(v for v in values if v not in (None, ""))
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


#: The page's keys, bound when the statement runs: building `in_(list)` coerced each of
#: 500 UIDs into its own literal, for each of the page's aggregate queries.
KEYS = bindparam("keys", expanding=True)


def counts(connection: Any, key_column: Any, keys: list[str]) -> dict[str, int]:
    """Rows per key. count(*), not count(column): the index on the key column alone answers
    it, without reading the rows (which hold the instances' DICOM JSON)."""
    if not keys:
        return {}
    statement = (select(key_column, func.count()).where(key_column.in_(KEYS))
                 .group_by(key_column))
    return {k: n for k, n in connection.execute(statement, {"keys": keys}).all()}


def distinct_values(
    connection: Any, value_column: Any, key_column: Any, keys: list[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    if keys:
        statement = (
            select(key_column, value_column)
            .where(key_column.in_(KEYS))
            .distinct()
            .order_by(key_column, value_column)
        )
        for key_value, value in connection.execute(statement, {"keys": keys}).all():
            if value:
                found[key_value].append(value)
    return found


def series_of_studies(
    connection: Any, keys: list[str]
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Number of series and ModalitiesInStudy (distinct, sorted, without empty values) of
    each study, from one read of the (study, modality) index instead of two queries."""
    numbers: dict[str, int] = defaultdict(int)
    found: dict[str, set[str]] = defaultdict(set)
    if keys:
        statement = select(SERIES.c.study_instance_uid, SERIES.c.modality).where(
            SERIES.c.study_instance_uid.in_(KEYS))
        for study, modality in connection.execute(statement, {"keys": keys}).all():
            numbers[study] += 1
            if modality:
                found[study].add(modality)
    return numbers, {study: sorted(values) for study, values in found.items()}


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def render_studies(
    connection: Any, rows: list[Any], query: SearchQuery, base: str
) -> list[dict[str, Any]]:
    uids = [r["study_instance_uid"] for r in rows]
    series_counts, modalities = series_of_studies(connection, uids)
    instance_counts = counts(connection, INSTANCES.c.study_instance_uid, uids)
    sop_classes = (
        distinct_values(connection, INSTANCES.c.sop_class_uid, INSTANCES.c.study_instance_uid, uids)
        if query.include_all or attrs.SOP_CLASSES_IN_STUDY in query.include_fields
        else None
    )
    online = element("CS", "ONLINE")  # one object for the page: it is only serialised
    results = []
    for row in rows:
        uid = row["study_instance_uid"]
        dataset = pick(orjson.loads(row["study_json"]), attrs.STUDY_DEFAULT_KEYS, query)
        if uid_list := modalities.get(uid):
            dataset[attrs.MODALITIES_IN_STUDY] = element("CS", *uid_list)
        if sop_classes is not None and sop_classes.get(uid):
            dataset[attrs.SOP_CLASSES_IN_STUDY] = element("UI", *sop_classes[uid])
        dataset[attrs.STUDY_RELATED_SERIES] = {"vr": "IS", "Value": [series_counts.get(uid, 0)]}
        dataset[attrs.STUDY_RELATED_INSTANCES] = {
            "vr": "IS", "Value": [instance_counts.get(uid, 0)]}
        dataset[attrs.INSTANCE_AVAILABILITY] = online
        dataset[attrs.RETRIEVE_URL] = {"vr": "UR", "Value": [study_url(base, uid)]}
        results.append(dict(sorted(dataset.items())))
    return results


def render_series(
    connection: Any, rows: list[Any], query: SearchQuery, base: str
) -> list[dict[str, Any]]:
    uids = [r["series_instance_uid"] for r in rows]
    instance_counts = counts(connection, INSTANCES.c.series_instance_uid, uids)
    studies: dict[str, dict[str, Any]] = {}
    study_keys = study_context_keys(query)
    results = []
    for row in rows:
        uid = row["series_instance_uid"]
        dataset = dict(picked(studies, row["study_instance_uid"], row["study_json"], study_keys,
                              query))
        dataset.update(pick(orjson.loads(row["series_json"]), attrs.SERIES_DEFAULT_KEYS, query))
        dataset[attrs.SERIES_RELATED_INSTANCES] = element("IS", instance_counts.get(uid, 0))
        dataset[attrs.INSTANCE_AVAILABILITY] = element("CS", "ONLINE")
        dataset[attrs.RETRIEVE_URL] = element(
            "UR", f"{study_url(base, row['study_instance_uid'])}/series/{uid}"
        )
        results.append(dict(sorted(dataset.items())))
    return results


def render_instances(
    connection: Any, rows: list[Any], query: SearchQuery, base: str
) -> list[dict[str, Any]]:
    studies: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, Any]] = {}
    study_keys = study_context_keys(query)
    results = []
    for row in rows:
        dataset = dict(picked(studies, row["study_instance_uid"], row["study_json"], study_keys,
                              query))
        dataset.update(picked(series, row["series_instance_uid"], row["series_json"],
                              attrs.SERIES_DEFAULT_KEYS, query))
        dataset.update(pick(orjson.loads(row["metadata_json"]), attrs.INSTANCE_DEFAULT_KEYS, query))
        dataset[attrs.INSTANCE_AVAILABILITY] = element("CS", "ONLINE")
        dataset[attrs.RETRIEVE_URL] = element(
            "UR",
            f"{study_url(base, row['study_instance_uid'])}/series/{row['series_instance_uid']}"
            f"/instances/{row['sop_instance_uid']}",
        )
        results.append(dict(sorted(dataset.items())))
    return results


def study_context_keys(query: SearchQuery) -> frozenset[str]:
    """Study attributes returned with series and instances (PS3.18 10.6.3.3: those of the
    levels above the query's, when the study is not fixed by the path)."""
    return (
        attrs.STUDY_DEFAULT_KEYS
        if query.study is None
        else attrs.COMMON_KEYS | frozenset({attrs.STUDY_INSTANCE_UID})
    )


RENDER = {
    Level.STUDY: render_studies,
    Level.SERIES: render_series,
    Level.INSTANCE: render_instances,
}
