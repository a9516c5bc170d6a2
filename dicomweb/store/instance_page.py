"""A page of QIDO instance results as DICOM JSON bytes, for HTTP answers.

Viewers ask for a series' instance list each time they open it: 392 results built as dicts
from three parsed parts each (study, series, instance) and serialised again. Here each
instance's result is kept as its JSON bytes with what it was made of (the stored study and
series JSON, the URL base; the instance's own part is fixed by its blob key, never reused), so
a page of known instances is a lookup per row. The output is the same bytes as `orjson.dumps`
of `results.render_instances` (tests/test_qido.py compares them).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

import orjson

from dicomweb.qido import SearchQuery
from dicomweb.store.results import (
    INSTANCE_PARTS_KEPT,
    fields_key,
    instance_result,
    study_context_keys,
)

#: What an instance's result is made of besides its blob key and the requested fields: the
#: stored JSON of its study and series, and the URL base.
MadeOf = tuple[bytes, bytes, str]


class InstanceObjects:
    """Instance results as JSON, under (blob key, study fixed by the path, requested fields);
    an entry is used only while what it was made of is equal (a comparison of the stored
    bytes, cheaper than hashing them as a key), and a changed study or series replaces it."""

    def __init__(self, max_entries: int = INSTANCE_PARTS_KEPT) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], tuple[MadeOf, bytes]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[Any, ...], made_of: MadeOf) -> bytes | None:
        found = self._entries.get(key)
        return found[1] if found is not None and found[0] == made_of else None

    def put(self, key: tuple[Any, ...], made_of: MadeOf, made: bytes) -> None:
        with self._lock:
            self._entries[key] = (made_of, made)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


INSTANCE_OBJECTS = InstanceObjects()


def instances_json(rows: list[Any], query: SearchQuery, base: str) -> bytes:
    """The JSON array of the page's instances (rows: query.RESULT_COLUMNS[Level.INSTANCE]
    with the study's and series' JSON)."""
    studies: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, Any]] = {}
    study_keys = study_context_keys(query)
    fields = fields_key(query)
    study_fixed = query.study is not None  # decides the study attributes a result carries
    # One copy of a study's and a series' stored JSON per page (one statement: the same for
    # every row of the study or series), shared by the entries kept: each row holds its own
    # copy, and 392 kept entries would hold 392 of them.
    study_json: dict[str, bytes] = {}
    series_json: dict[str, bytes] = {}
    objects = []
    for row in rows:
        key = (row["blob_key"], study_fixed, fields)
        made_of = (study_json.setdefault(row["study_instance_uid"], row["study_json"]),
                   series_json.setdefault(row["series_instance_uid"], row["series_json"]), base)
        made = INSTANCE_OBJECTS.get(key, made_of)
        if made is None:
            made = orjson.dumps(instance_result(row, query, base, studies, series, study_keys,
                                                fields))
            INSTANCE_OBJECTS.put(key, made_of, made)
        objects.append(made)
    return b"[" + b",".join(objects) + b"]"
