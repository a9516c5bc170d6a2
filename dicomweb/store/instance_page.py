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
from sqlalchemy import select

from dicomweb.qido import SearchQuery
from dicomweb.store.repository import INSTANCES
from dicomweb.store.results import (
    INSTANCE_PARTS_KEPT,
    KEYS,
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


def instances_json(connection: Any, rows: list[Any], query: SearchQuery, base: str) -> bytes:
    """The JSON array of the page's instances (rows: query.RESULT_COLUMNS[Level.INSTANCE]
    with the study's and series' JSON; without `metadata_json` when the page was read lean:
    a kept result does not need it, so only the page's new results read it, afterwards)."""
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
    objects: list[bytes | None] = []
    new: list[tuple[int, Any, MadeOf]] = []
    for row in rows:
        made_of = (study_json.setdefault(row["study_instance_uid"], row["study_json"]),
                   series_json.setdefault(row["series_instance_uid"], row["series_json"]), base)
        objects.append(INSTANCE_OBJECTS.get((row["blob_key"], study_fixed, fields), made_of))
        if objects[-1] is None:
            new.append((len(objects) - 1, row, made_of))
    stored = (instance_metadata(connection, [row for _, row, _ in new])
              if new and "metadata_json" not in new[0][1] else {})
    for index, row, made_of in new:
        source = row
        if stored:
            found = stored.get(row["sop_instance_uid"])
            if found is None:  # deleted since the page was read: not listed
                continue
            source = {**row, "blob_key": found[0], "metadata_json": found[1]}
        made = orjson.dumps(instance_result(source, query, base, studies, series, study_keys,
                                            fields))
        # Under the blob key of the version read (an overwrite in between has a new one).
        INSTANCE_OBJECTS.put((source["blob_key"], study_fixed, fields), made_of, made)
        objects[index] = made
    return b"[" + b",".join(o for o in objects if o is not None) + b"]"


def instance_metadata(connection: Any, rows: list[Any]) -> dict[str, tuple[str, bytes]]:
    """Blob key and stored JSON of the rows' instances, by SOP Instance UID."""
    statement = select(INSTANCES.c.sop_instance_uid, INSTANCES.c.blob_key,
                       INSTANCES.c.metadata_json).where(INSTANCES.c.sop_instance_uid.in_(KEYS))
    found = connection.execute(statement, {"keys": [r["sop_instance_uid"] for r in rows]})
    return {sop: (key, metadata) for sop, key, metadata in found}
