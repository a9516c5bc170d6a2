"""A page of QIDO study results as DICOM JSON bytes, for HTTP answers.

A study list of 500 studies built as dicts is ~30,000 Python objects (an element is a dict
holding a list, a person name one more dict), parsed from each study's stored JSON, sorted and
serialised again: most of the CPU of `PatientName=S*`. Here the stored attributes a page asks
for are kept per study as JSON bytes (untracked by the garbage collector), cut at the places
where the computed attributes go, so a row is a join of bytes; and the joined object is kept
too, reused while what it was made of (stored JSON, series, counts, URL base) is unchanged.
The output is the same bytes as `orjson.dumps` of `results.render_studies` (tests/test_qido.py
compares them).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from threading import Lock
from typing import Any

import orjson
from sqlalchemy import Select, String, column, func, literal_column, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from dicomweb import attributes as attrs
from dicomweb.qido import SearchQuery
from dicomweb.store.repository import INSTANCES, SERIES, STUDIES
from dicomweb.store.results import (
    distinct_values,
    element,
    fields_key,
    study_url,
    take,
    wanted_keys,
)

#: The attributes computed at query time, in tag order: the stored ones are cut around them.
#: A study's stored JSON holds none of them (ingest keeps STUDY_LEVEL_KEYS only).
COMPUTED = (
    attrs.INSTANCE_AVAILABILITY,  # 00080056
    attrs.MODALITIES_IN_STUDY,  # 00080061
    attrs.SOP_CLASSES_IN_STUDY,  # 00080062
    attrs.RETRIEVE_URL,  # 00081190
    attrs.STUDY_RELATED_SERIES,  # 00201206
    attrs.STUDY_RELATED_INSTANCES,  # 00201208
)
assert list(COMPUTED) == sorted(COMPUTED)

#: The stored members of a study in the len(COMPUTED) + 1 runs between the computed ones; a
#: member before the last computed one is written with a comma after it, one after it with a
#: comma before it, so that a row is a single join.
Segments = tuple[bytes, ...]

#: Studies kept: a page as large as the default QIDO maximum (10,000), ~1 kB each.
STUDY_PARTS_KEPT = 10_000


def member(tag: str, value: Any) -> bytes:
    """`"tag":value` as orjson writes it inside an object."""
    return b'"%s":%s' % (tag.encode(), orjson.dumps(value))


def segments(dataset: dict[str, Any]) -> Segments:
    """The dataset's members (sorted by tag) in runs between the computed attributes."""
    runs: list[list[bytes]] = [[] for _ in range(len(COMPUTED) + 1)]
    slot = 0
    for tag in sorted(dataset):
        if tag in COMPUTED:  # never stored (ingest); if it were, the computed value wins
            continue
        while slot < len(COMPUTED) and tag > COMPUTED[slot]:
            slot += 1
        runs[slot].append(member(tag, dataset[tag]))
    *before, after = runs
    return (*(b"".join(m + b"," for m in run) for run in before),
            b"".join(b"," + m for m in after))


#: What a study's JSON object is made of, besides the requested fields: its stored JSON, the
#: database's text of its series' modalities, its number of instances, the URL base, its SOP
#: classes (None unless asked for).
MadeOf = tuple[bytes, str | None, int, str, list[str] | None]


class StudyObjects:
    """The JSON object of a study in a page, under (requested fields, study UID), with what it
    was made of: used only while that is equal (comparing ~1 kB of stored JSON costs less
    than hashing it as a key would); a changed study replaces its entry. A page of known
    studies is then a lookup per study, not a join of a dozen parts."""

    def __init__(self, max_entries: int = STUDY_PARTS_KEPT) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[tuple[Any, ...], str], tuple[MadeOf, bytes]] = \
            OrderedDict()
        self._lock = Lock()

    def object(self, uid: str, made_of: MadeOf, fields: tuple[Any, ...],
               wanted: frozenset[str] | None) -> bytes:
        """`fields`, `wanted`: `fields_key(query)`, `wanted_keys(...)`, once per page."""
        key = (fields, uid)
        found = self._entries.get(key)
        if found is not None and found[0] == made_of:
            return found[1]
        made = study_object(uid, made_of, segments(take(orjson.loads(made_of[0]), wanted)))
        with self._lock:
            self._entries[key] = (made_of, made)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return made


STUDY_OBJECTS = StudyObjects()


def study_order(columns: Any) -> list[Any]:
    """The order of a study list (newest first), on `columns` of the studies table or of a
    page of it."""
    return [columns.study_date.desc(), columns.study_time.desc(), columns.study_instance_uid]


class json_array(FunctionElement[str]):
    """A JSON array (text) of a column's values over the rows of a group, in any order."""

    type = String()
    inherit_cache = True
    name = "json_array"


@compiles(json_array)
def _json_array_sqlite(element: json_array, compiler: Any, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


@compiles(json_array, "postgresql")
def _json_array_postgresql(element: json_array, compiler: Any, **kw: Any) -> str:
    return f"CAST(json_agg({compiler.process(element.clauses, **kw)}) AS TEXT)"


#: A page of the study list (the rows of query.RESULT_COLUMNS[Level.STUDY]), by name: the
#: statement below is built once, and each page is attached to it as the CTE of that name
#: (building the subqueries for every request cost ~0.2 ms, as much as running them).
PAGE = table("page", *(column(name) for name in
                       ("study_instance_uid", "study_json", "study_date", "study_time")))
#: SQLite's page: the keys of its studies only, their JSON read after the sort by rowid (the
#: sort no longer carries ~1 kB of stored JSON per study). Not on PostgreSQL, where the
#: join became a second scan of the studies.
KEYS = ("study_date", "study_time", "study_instance_uid")
PAGE_OF_KEYS = table("page", column("row_id"), *(column(name) for name in KEYS))
ROWID = literal_column("studies.rowid")


def _counted(page: Any, stored_json: Any) -> Select[Any]:
    study = page.c.study_instance_uid
    # One probe of the series for both their number and ModalitiesInStudy (a second
    # subquery for the count cost ~15 % of the statement).
    series_modalities = select(json_array(SERIES.c.modality)).where(
        SERIES.c.study_instance_uid == study)
    instance_count = select(func.count()).where(INSTANCES.c.study_instance_uid == study)
    return select(
        study, stored_json,
        series_modalities.scalar_subquery().label("series_modalities"),
        instance_count.scalar_subquery().label("instance_count"),
    ).order_by(*study_order(page.c))


COUNTED = _counted(PAGE, PAGE.c.study_json)
COUNTED_BY_KEYS = _counted(PAGE_OF_KEYS, STUDIES.c.study_json).select_from(
    PAGE_OF_KEYS.join(STUDIES, PAGE_OF_KEYS.c.row_id == ROWID))


def with_counts(page: Select[Any], dialect: str) -> Select[Any]:
    """The page's studies with the modality of each of their series and their number of
    instances: subqueries the database runs per study of the page on the (study, ...)
    indexes, instead of lists of the page's UIDs sent back to it and aggregated in Python."""
    if dialect == "sqlite":
        keys = page.with_only_columns(ROWID.label("row_id"), *(STUDIES.c[k] for k in KEYS))
        return COUNTED_BY_KEYS.add_cte(keys.cte(PAGE_OF_KEYS.name))
    return COUNTED.add_cte(page.cte(PAGE.name))


ONLINE = b'"%s":%s,' % (attrs.INSTANCE_AVAILABILITY.encode(),
                       orjson.dumps(element("CS", "ONLINE")))
MODALITIES = b'"' + attrs.MODALITIES_IN_STUDY.encode() + b'":{"vr":"CS","Value":%s},'
SOP_CLASSES = b'"' + attrs.SOP_CLASSES_IN_STUDY.encode() + b'":{"vr":"UI","Value":%s},'
RETRIEVE_URL = b'"' + attrs.RETRIEVE_URL.encode() + b'":{"vr":"UR","Value":[%s]},'
SERIES_COUNT = b'"' + attrs.STUDY_RELATED_SERIES.encode() + b'":{"vr":"IS","Value":[%d]},'
INSTANCE_COUNT = b'"' + attrs.STUDY_RELATED_INSTANCES.encode() + b'":{"vr":"IS","Value":[%d]}'


@lru_cache(maxsize=4096)
def series_part(found: str | None) -> tuple[int, bytes]:
    """The number of series and the ModalitiesInStudy member (distinct, sorted, no empty
    value: as results.series_of_studies; b"" when there is none) from the modality of each
    series. Cached by the database's text: a store holds a few hundred combinations of
    modalities, and parsing and sorting them again for every study cost a third of a page."""
    if not found:  # PostgreSQL's json_agg of no rows
        return 0, b""
    modalities = orjson.loads(found)
    distinct = sorted({m for m in modalities if m})
    return len(modalities), MODALITIES % orjson.dumps(distinct) if distinct else b""


def study_object(uid: str, made_of: MadeOf, stored: Segments) -> bytes:
    """A study's JSON object: its stored members (`stored`, cut by `segments`) with the
    computed ones in their places."""
    _, series_modalities, instance_count, base, classes = made_of
    series_count, modalities = series_part(series_modalities)
    return b"".join((
        b"{", stored[0], ONLINE,
        stored[1], modalities,
        stored[2], SOP_CLASSES % orjson.dumps(classes) if classes else b"",
        stored[3], RETRIEVE_URL % orjson.dumps(study_url(base, uid)),
        stored[4], SERIES_COUNT % series_count,
        stored[5], INSTANCE_COUNT % instance_count,
        stored[6], b"}",
    ))


def studies_json(connection: Any, rows: list[Any], query: SearchQuery, base: str) -> bytes:
    """The JSON array of the page's studies (rows: `with_counts`'s, as tuples)."""
    sop_classes = (
        distinct_values(connection, INSTANCES.c.sop_class_uid, INSTANCES.c.study_instance_uid,
                        [r[0] for r in rows])
        if query.include_all or attrs.SOP_CLASSES_IN_STUDY in query.include_fields
        else {}
    )
    wanted = wanted_keys(attrs.STUDY_DEFAULT_KEYS, query)
    fields = fields_key(query)
    known = STUDY_OBJECTS.object
    # Unpacked by position (COUNTED's columns): a Row's attribute or mapping access cost more
    # than the rest of the row's work.
    objects = [known(uid, (stored, series_modalities, instance_count, base, sop_classes.get(uid)),
                     fields, wanted)
               for uid, stored, series_modalities, instance_count in rows]
    if not objects:
        return b"[]"
    objects[0] = b"[" + objects[0]  # the brackets on the ends: one copy of the page, not three
    objects[-1] += b"]"
    return b",".join(objects)
