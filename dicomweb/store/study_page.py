"""A page of QIDO study results as DICOM JSON bytes, for HTTP answers.

A study list of 500 studies built as dicts is ~30,000 Python objects (an element is a dict
holding a list, a person name one more dict), parsed from each study's stored JSON, sorted and
serialised again: most of the CPU of `PatientName=S*`. Here the stored attributes a page asks
for are kept per study as JSON bytes (untracked by the garbage collector), cut at the places
where the computed attributes go, so a row is a join of bytes. The output is the same bytes
as `orjson.dumps` of `results.render_studies` (tests/test_qido.py compares them).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

import orjson

from dicomweb import attributes as attrs
from dicomweb.qido import SearchQuery
from dicomweb.store.repository import INSTANCES
from dicomweb.store.results import (
    counts,
    distinct_values,
    element,
    fields_key,
    series_of_studies,
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

Segments = tuple[bytes, ...]  # len(COMPUTED) + 1 comma-joined runs of stored elements

ONLINE = b'"%s":%s' % (attrs.INSTANCE_AVAILABILITY.encode(), orjson.dumps(element("CS", "ONLINE")))

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
    return tuple(b",".join(run) for run in runs)


class StudyParts:
    """The segments of a study's stored attributes that a page asks for, under (requested
    fields, stored JSON): the key is the stored bytes themselves, so an entry whose study
    changed is simply never asked for again (and ages out)."""

    def __init__(self, max_entries: int = STUDY_PARTS_KEPT) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[tuple[Any, ...], bytes], Segments] = OrderedDict()
        self._lock = Lock()

    def segments(self, stored: bytes, fields: tuple[Any, ...],
                 wanted: frozenset[str] | None) -> Segments:
        """`fields`, `wanted`: `fields_key(query)`, `wanted_keys(...)`, once per page."""
        key = (fields, stored)
        found = self._entries.get(key)
        if found is not None:
            return found
        found = segments(take(orjson.loads(stored), wanted))
        with self._lock:
            self._entries[key] = found
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return found


STUDY_PARTS = StudyParts()


def count_member(tag: bytes, number: int) -> bytes:
    return b'"%s":{"vr":"IS","Value":[%d]}' % (tag, number)


SERIES_TAG = attrs.STUDY_RELATED_SERIES.encode()
INSTANCES_TAG = attrs.STUDY_RELATED_INSTANCES.encode()


def studies_json(connection: Any, rows: list[Any], query: SearchQuery, base: str) -> bytes:
    """The JSON array of the page's studies (rows: study_instance_uid, study_json)."""
    uids = [r["study_instance_uid"] for r in rows]
    series_counts, modalities = series_of_studies(connection, uids)
    instance_counts = counts(connection, INSTANCES.c.study_instance_uid, uids)
    sop_classes = (
        distinct_values(connection, INSTANCES.c.sop_class_uid, INSTANCES.c.study_instance_uid, uids)
        if query.include_all or attrs.SOP_CLASSES_IN_STUDY in query.include_fields
        else {}
    )
    wanted = wanted_keys(attrs.STUDY_DEFAULT_KEYS, query)
    fields = fields_key(query)
    objects = []
    for row in rows:
        uid = row["study_instance_uid"]
        stored = STUDY_PARTS.segments(row["study_json"], fields, wanted)
        found_modalities = modalities.get(uid)
        found_classes = sop_classes.get(uid)
        pieces = (
            stored[0], ONLINE,
            stored[1],
            member(attrs.MODALITIES_IN_STUDY, element("CS", *found_modalities))
            if found_modalities else b"",
            stored[2],
            member(attrs.SOP_CLASSES_IN_STUDY, element("UI", *found_classes))
            if found_classes else b"",
            stored[3], member(attrs.RETRIEVE_URL, element("UR", study_url(base, uid))),
            stored[4], count_member(SERIES_TAG, series_counts.get(uid, 0)),
            stored[5], count_member(INSTANCES_TAG, instance_counts.get(uid, 0)),
            stored[6],
        )
        objects.append(b"{" + b",".join([p for p in pieces if p]) + b"}")
    return b"[" + b",".join(objects) + b"]"
