"""QIDO results (PS3.18 10.6.3): a page of index rows → DICOM JSON. The attributes come from
the stored JSON of the study, series and instance; the computed ones (counts,
ModalitiesInStudy, SOPClassesInStudy) are aggregated for the whole page in one query each."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from threading import Lock
from typing import Any

import orjson
from sqlalchemy import bindparam, func, select

from dicomweb import attributes as attrs
from dicomweb.attributes import Level
from dicomweb.qido import SearchQuery
from dicomweb.store.repository import INSTANCES, SERIES


def pick(dataset: dict[str, Any], defaults: frozenset[str], query: SearchQuery) -> dict[str, Any]:
    return take(dataset, wanted_keys(defaults, query))


def wanted_keys(defaults: frozenset[str], query: SearchQuery) -> frozenset[str] | None:
    """The attributes a result carries (None: all, includefield=all), once per page."""
    return None if query.include_all else defaults | query.include_fields


def take(dataset: dict[str, Any], wanted: frozenset[str] | None) -> dict[str, Any]:
    if wanted is None:
        return {k: v for k, v in dataset.items() if "BulkDataURI" not in v}
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


#: Instance parts kept (~0.5 kB each as JSON): the instance lists of some 40 long series.
INSTANCE_PARTS_KEPT = 16384


class InstanceParts:
    """The instance-level attributes a QIDO answer takes from each instance's stored JSON,
    kept as the JSON of just those attributes under (blob key, requested fields): a stored
    version's blob key is never reused (an overwrite gets a new one), so an entry is never
    stale. Parsing ~0.5 kB instead of the whole ~3 kB instance halves the CPU of a
    392-instance list, which viewers ask for each time a series is opened."""

    def __init__(self, max_entries: int = INSTANCE_PARTS_KEPT) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = Lock()

    def part(self, blob_key: str, stored: bytes, query: SearchQuery,
             fields: tuple[Any, ...]) -> dict[str, Any]:
        """`fields`: `fields_key(query)`, once per page."""
        key = (blob_key, *fields)
        found = self._entries.get(key)
        if found is not None:
            return orjson.loads(found)
        part = pick(orjson.loads(stored), attrs.INSTANCE_DEFAULT_KEYS, query)
        with self._lock:
            self._entries[key] = orjson.dumps(part)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return part


INSTANCE_PARTS = InstanceParts()


def fields_key(query: SearchQuery) -> tuple[Any, ...]:
    """What of a query decides which attributes a result holds."""
    return (query.include_all, *sorted(query.include_fields))


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
    wanted = wanted_keys(attrs.STUDY_DEFAULT_KEYS, query)
    results = []
    for row in rows:
        uid = row["study_instance_uid"]
        dataset = take(orjson.loads(row["study_json"]), wanted)
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
    fields = fields_key(query)
    return [instance_result(row, query, base, studies, series, study_keys, fields)
            for row in rows]


def instance_result(row: Any, query: SearchQuery, base: str,
                    studies: dict[str, dict[str, Any]], series: dict[str, dict[str, Any]],
                    study_keys: frozenset[str], fields: tuple[Any, ...]) -> dict[str, Any]:
    """One instance's result; `studies`, `series`: the page's parsed parts (see `picked`)."""
    dataset = dict(picked(studies, row["study_instance_uid"], row["study_json"], study_keys,
                          query))
    dataset.update(picked(series, row["series_instance_uid"], row["series_json"],
                          attrs.SERIES_DEFAULT_KEYS, query))
    dataset.update(INSTANCE_PARTS.part(row["blob_key"], row["metadata_json"], query, fields))
    dataset[attrs.INSTANCE_AVAILABILITY] = element("CS", "ONLINE")
    dataset[attrs.RETRIEVE_URL] = element(
        "UR",
        f"{study_url(base, row['study_instance_uid'])}/series/{row['series_instance_uid']}"
        f"/instances/{row['sop_instance_uid']}",
    )
    return dict(sorted(dataset.items()))


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
