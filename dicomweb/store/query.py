"""QIDO on the index: matching keys become SQL on indexed columns (lower-level keys become
EXISTS subqueries); keys without a column are matched on the stored DICOM JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, exists, or_, select, true

from dicomweb import attributes as attrs
from dicomweb.attributes import Kind, Level
from dicomweb.errors import BadRequest
from dicomweb.qido import Condition, SearchQuery, split_list
from dicomweb.store.access import EVERY_STUDY, StudyFilter
from dicomweb.store.instance_page import instances_json
from dicomweb.store.repository import INSTANCES, SERIES, STUDIES
from dicomweb.store.results import RENDER, element, pick
from dicomweb.store.study_page import studies_json, study_order, with_counts

__all__ = ["JsonPage", "SearchResult", "element", "json_match", "pick", "search", "search_json",
           "sql_condition"]

TABLES = {Level.STUDY: STUDIES, Level.SERIES: SERIES, Level.INSTANCE: INSTANCES}
DEPTH = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
ESCAPE = "!"


@dataclass
class SearchResult:
    rows: list[dict[str, Any]]
    more: bool  # results exist past this page


@dataclass
class JsonPage:
    body: bytes  # the results as a DICOM JSON array
    study_uids: list[str]  # the studies the results belong to, in order, once each
    more: bool


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
    with engine.connect() as connection:
        rows, more = matching_rows(connection, query, access)
        return SearchResult(RENDER[query.level](connection, rows, query, base_url), more)


def search_json(engine: Engine, query: SearchQuery, base_url: str,
                access: StudyFilter = EVERY_STUDY) -> JsonPage:
    """`search` as the JSON array an HTTP answer sends, and the studies it names."""
    with engine.connect() as connection:
        if query.level == Level.STUDY:
            counted = partial(with_counts, dialect=connection.dialect.name)
            rows, more = matching_rows(connection, query, access, counted)
            body = studies_json(connection, rows, query, base_url)
            study_uids = [r[0] for r in rows]  # one row per study
        else:
            instances = query.level == Level.INSTANCE
            rows, more = matching_rows(connection, query, access, lean=instances)
            body = (instances_json(connection, rows, query, base_url) if instances
                    else orjson.dumps(RENDER[query.level](connection, rows, query, base_url)))
            study_uids = list(dict.fromkeys(r["study_instance_uid"] for r in rows))
    return JsonPage(body, study_uids, more)


def matching_rows(connection: Connection, query: SearchQuery, access: StudyFilter,
                  decorate: Callable[[Select[Any]], Select[Any]] | None = None,
                  lean: bool = False) -> tuple[list[Any], bool]:
    """The index rows of one page (mappings), and whether more match. `decorate` (studies
    only) turns the statement of the page into one that adds columns to its rows; its rows
    come as tuples in its columns' order (what a mapping per row costs is most of a fetch).
    `lean` (instances only): without the instances' stored JSON when no key is matched on it
    (~3 kB a row, most of a PostgreSQL fetch; store.instance_page reads what it needs)."""
    statement, json_conditions = matching_statement(query, access)
    limit = query.limit or 0
    if lean and not json_conditions:
        statement = statement.with_only_columns(
            *(c for c in statement.selected_columns if c.name != "metadata_json"))
    if not json_conditions:
        statement = statement.offset(query.offset).limit(limit + 1)
        if decorate is not None:
            statement = decorate(statement)
    # fetchall: one driver call for the page, not one fetchone per row.
    result = connection.execute(statement)
    rows = list(result.all() if decorate is not None and not json_conditions
                else result.mappings().all())
    if json_conditions:
        level = query.level
        rows = [
            r
            for r in rows
            if all(json_match(row_json(r, c.tag, level), c, query.fuzzy) for c in json_conditions)
        ]
        rows = rows[query.offset : query.offset + limit + 1]
        if decorate is not None and rows:  # the page again, by its UIDs, with the columns
            page = (select(*(STUDIES.c[name] for name in RESULT_COLUMNS[Level.STUDY]))
                    .where(STUDIES.c.study_instance_uid.in_(
                        [r["study_instance_uid"] for r in rows[:limit]]))
                    .order_by(*ORDER[Level.STUDY]()))
            more = len(rows) > limit
            return list(connection.execute(decorate(page)).all()), more
    return rows[:limit], len(rows) > limit


def matching_statement(query: SearchQuery,
                       access: StudyFilter) -> tuple[Select[Any], list[Condition]]:
    """The statement of every match, in result order, and the keys matched on stored JSON
    (after it runs)."""
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
    return statement, json_conditions


RESULT_COLUMNS = {
    # The order's columns too: store.study_page sorts the page again after adding to it.
    Level.STUDY: ("study_instance_uid", "study_json", "study_date", "study_time"),
    Level.SERIES: ("study_instance_uid", "series_instance_uid", "series_json"),
    Level.INSTANCE: ("study_instance_uid", "series_instance_uid", "sop_instance_uid",
                     "blob_key", "metadata_json"),
}

ORDER: dict[Level, Callable[[], list[Any]]] = {
    Level.STUDY: lambda: study_order(STUDIES.c),
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
