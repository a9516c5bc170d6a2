"""Fuzzing the way in (hypothesis, bounded in examples and time): the multipart reader, STOW
ingest with mutated real files, and QIDO parameters, on SQLite and PostgreSQL. Whatever the
input: a typed rejection (never another exception, never a 5xx), no hang, no temp file left,
and no instance stored before changed."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import requests
from factory import PYDICOM_FILES, image, multipart, to_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomweb.attributes import Level
from dicomweb.config import Settings
from dicomweb.errors import DicomWebError, InstanceRejected
from dicomweb.multipart import read_parts
from dicomweb.qido import parse_search
from dicomweb.store import query as store_query
from dicomweb.store.repository import Store, StoredInstance

FUZZ = settings(max_examples=150, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
#: Small real files of many kinds (pydicom's), plus one of ours.
SEEDS = [p.read_bytes() for p in PYDICOM_FILES if p.stat().st_size < 64_000][:40]
SEEDS.append(to_bytes(image()))


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real file with a few edits: byte flips, cuts, duplicated or dropped ranges, and
    lengths overwritten with extreme values."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "dup", "drop", "length", "insert"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "length":
            data[at : at + 4] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f",
                 b"\x00\x00\x01\x00"]))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


# --- the multipart reader -----------------------------------------------------------------


class TempFiles:
    def __init__(self, folder: Path) -> None:
        from dicomweb.store.blobs import BlobStore

        self.blobs = BlobStore(folder)
        self.blobs.create_folders()

    def new_temp_path(self) -> Path:
        return self.blobs.new_temp_path()

    def open_temp(self, temp_path: Path) -> BinaryIO:
        return self.blobs.open_temp(temp_path)

    def discard(self, temp_path: Path) -> None:
        self.blobs.discard(temp_path)


BOUNDARY = "fuzzboundary"


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    body, _ = multipart([draw(st.binary(max_size=300)) for _ in range(draw(st.integers(0, 3)))])
    marker = body.split(b"\r\n", 1)[0][2:]
    body = body.replace(marker, BOUNDARY.encode())
    pieces = [b"--" + BOUNDARY.encode(), b"\r\n", b"--", b"\r\n\r\n", b" ", b":", b"\x00"]
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data[at:at] = draw(st.sampled_from(pieces))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(body=multipart_bodies(), chunk=st.integers(1, 200))
def test_fuzz_multipart_reader(tmp_path_factory: pytest.TempPathFactory, body: bytes,
                               chunk: int) -> None:
    files = TempFiles(tmp_path_factory.getbasetemp() / "fuzz-multipart")

    async def feed() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]

    async def run() -> None:
        async for part in read_parts(feed(), BOUNDARY, files, max_parts=5):
            assert part.path is not None and part.path.stat().st_size == part.size
            files.discard(part.path)

    try:
        asyncio.run(run())
    except DicomWebError as exc:
        assert exc.status_code in (400, 413)
    assert list(files.blobs.tmp_dir.iterdir()) == []


# --- STOW ingest --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_store(backend: str | None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Store, dict[str, str]]]:
    """A store holding one instance; yields it and the digests of its blob and index row."""
    data = tmp_path_factory.mktemp("fuzz-store")
    store = Store(Settings(data_dir=data, database_url=backend).normalised())
    store.create_schema()
    baseline = image()
    temp = store.blobs.new_temp_path()
    temp.write_bytes(to_bytes(baseline))
    assert isinstance(store.store_file(temp), StoredInstance)
    yield store, snapshot(store, baseline.SOPInstanceUID)
    store.close()


def snapshot(store: Store, sop: str) -> dict[str, str]:
    """Digests of an instance's index row, metadata and blob bytes."""
    from sqlalchemy import select

    from dicomweb.store.repository import INSTANCES

    with store.engine.connect() as connection:
        row = connection.execute(
            select(INSTANCES.c.blob_key, INSTANCES.c.blob_sha256, INSTANCES.c.metadata_json)
            .where(INSTANCES.c.sop_instance_uid == sop)).one()
    blob = hashlib.sha256(store.blobs.path(row.blob_key).read_bytes()).hexdigest()
    return {"sop": sop, "key": row.blob_key, "sha": row.blob_sha256, "blob": blob,
            "metadata": hashlib.sha256(row.metadata_json).hexdigest()}


@FUZZ
@given(files=st.lists(mutated(SEEDS), min_size=1, max_size=3))
def test_fuzz_stow_ingest(fuzz_store: tuple[Store, dict[str, str]], files: list[bytes]) -> None:
    store, before = fuzz_store
    paths = []
    for content in files:
        path = store.blobs.new_temp_path()
        path.write_bytes(content)
        paths.append(path)
    outcomes = store.store_files(paths)
    assert len(outcomes) == len(files)
    for outcome in outcomes:
        assert isinstance(outcome, StoredInstance | InstanceRejected)
        if isinstance(outcome, InstanceRejected):
            assert outcome.reason in (0xA700, 0xA900, 0xC000, 0x0111, 0x0110)
    assert list(store.blobs.tmp_dir.iterdir()) == []
    assert snapshot(store, before["sop"]) == before


# --- QIDO parameters ----------------------------------------------------------------------

NAMES = st.sampled_from([
    "limit", "offset", "fuzzymatching", "includefield", "PatientName", "StudyDate",
    "00100020", "StudyInstanceUID", "ModalitiesInStudy", "SeriesNumber", "StudyTime",
    "ReferencedStudySequence.ReferencedSOPInstanceUID", "0020000D", "x", "",
]) | st.text(max_size=12)
VALUES = st.sampled_from([
    "", "*", "?", "-", "20240101-", "9223372036854775808", "-1", "1e9", "%", "%ff", "%00",
    "a\\b", "1.2.3,4.5", "\u00e9", "'; DROP TABLE study;--",
]) | st.text(max_size=20)


@FUZZ
@given(pairs=st.lists(st.tuples(NAMES, VALUES), max_size=5),
       level=st.sampled_from(list(Level)))
def test_fuzz_qido_parameters(fuzz_store: tuple[Store, dict[str, str]],
                              pairs: list[tuple[str, str]], level: Level) -> None:
    store, _ = fuzz_store
    query_string = "&".join(f"{n}={v}" for n, v in pairs)
    try:
        query = parse_search(query_string, level, max_results=10)
        store_query.search(store.engine, query, "http://x/dicomweb")
    except DicomWebError as exc:  # e.g. a key of a level above the one searched
        assert exc.status_code == 400


# --- over HTTP ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=20000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(parts=st.lists(mutated(SEEDS), min_size=1, max_size=3), query=VALUES)
def test_fuzz_over_http_gives_no_5xx(server, parts: list[bytes], query: str) -> None:
    body, content_type = multipart(parts)
    response = requests.post(f"{server.url}/studies", data=body,
                             headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code in (200, 202, 409), response.text
    search = requests.get(f"{server.url}/studies?PatientName={query}&limit={query}", timeout=30)
    assert search.status_code < 500, search.text
    assert list((server.data_dir / "blobs" / ".tmp").glob("*.part")) == []
