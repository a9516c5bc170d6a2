"""The store in process (SQLite and PostgreSQL): duplicates policy, replacement, delete
cascade, recovery of a blob whose index transaction never ran."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from factory import image, to_bytes
from sqlalchemy import func, select

from dicomweb.config import Settings
from dicomweb.errors import DUPLICATE_SOP_INSTANCE, InstanceRejected
from dicomweb.store.repository import INSTANCES, PATIENTS, PENDING, SERIES, STUDIES, Store
from dicomweb.store.tables import utcnow


@pytest.fixture
def make_store(tmp_path, own_database):
    """Stores on the module's own database: recovery counts every journal row it finds, and
    other modules' servers may leave theirs in the session's shared one."""
    stores = []

    def make(**overrides) -> Store:
        store = Store(Settings(data_dir=tmp_path, database_url=own_database, **overrides))
        store.create_schema()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def put(store: Store, data: bytes):
    temp = store.blobs.new_temp_path()
    temp.write_bytes(data)
    return store.store_file(temp)


def count(store: Store, table, **where: str) -> int:
    """Rows of `table` matching `where` (the PostgreSQL database is shared by the session)."""
    statement = select(func.count()).select_from(table)
    for column, value in where.items():
        statement = statement.where(table.c[column] == value)
    with store.engine.connect() as connection:
        return connection.execute(statement).scalar_one()


def test_duplicates_rejected_by_default_and_overwritten_on_request(make_store):
    ds = image()
    first = to_bytes(ds)
    store = make_store()
    assert put(store, first).outcome == "stored"
    assert put(store, first).outcome == "duplicate"
    ds.PatientName = "Changed^Name"
    second = to_bytes(ds)
    with pytest.raises(InstanceRejected) as rejected:
        put(store, second)
    assert rejected.value.reason == DUPLICATE_SOP_INSTANCE
    old_key = store.locate(ds.StudyInstanceUID)[0].blob_key
    assert store.blobs.path(old_key).read_bytes() == first

    overwriting = make_store(duplicates="overwrite")
    assert put(overwriting, second).outcome == "replaced"
    new_key = overwriting.locate(ds.StudyInstanceUID)[0].blob_key
    assert overwriting.blobs.path(new_key).read_bytes() == second
    assert not overwriting.blobs.path(old_key).exists()
    assert count(overwriting, INSTANCES, study_instance_uid=ds.StudyInstanceUID) == 1
    assert count(overwriting, PENDING, blob_key=new_key) == 0


def test_delete_removes_empty_parents(make_store):
    store = make_store()
    patient = "PID-DELETE-CASCADE"
    a, b = image(patient_id=patient), image(patient_id=patient)
    put(store, to_bytes(a))
    put(store, to_bytes(b))
    assert store.delete(a.StudyInstanceUID) == 1
    assert count(store, STUDIES, study_instance_uid=a.StudyInstanceUID) == 0
    assert count(store, SERIES, series_instance_uid=a.SeriesInstanceUID) == 0
    assert count(store, PATIENTS, patient_id=patient) == 1  # b's study still refers to it
    assert store.delete(b.StudyInstanceUID, b.SeriesInstanceUID, b.SOPInstanceUID) == 1
    assert count(store, STUDIES, study_instance_uid=b.StudyInstanceUID) == 0
    assert count(store, SERIES, series_instance_uid=b.SeriesInstanceUID) == 0
    assert count(store, PATIENTS, patient_id=patient) == 0
    for ds in (a, b):
        assert not any((Path(store.blobs.root) / ds.StudyInstanceUID).rglob("*.dcm"))


def test_recover_removes_journaled_blob_without_index_row(make_store):
    store = make_store()
    key = store.blobs.new_key("1.2", "1.3", "1.4")
    with store.engine.begin() as connection:
        connection.execute(PENDING.insert(), {"blob_key": key, "created_at": utcnow()})
    temp = store.blobs.new_temp_path()
    temp.write_bytes(b"DICM" * 10)
    store.blobs.commit(temp, key)  # then the process "dies" before indexing
    assert store.recover() == 0  # too recent: could be another worker's upload in progress
    assert store.blobs.path(key).exists()
    assert store.recover(grace=timedelta(0)) == 1
    assert not store.blobs.path(key).exists()
    assert count(store, PENDING, blob_key=key) == 0


@pytest.mark.parametrize("column", ["patient_name", "patient_id", "accession_number"])
def test_a_wildcard_prefix_is_read_from_an_index(make_store, column):
    """QIDO's `Smi*` is `LIKE 'Smi%'`: on PostgreSQL only an index of the pattern operator
    class serves it whatever the database's collation (store.tables.prefix_index), on SQLite
    the plain one with case_sensitive_like. Sequential scans off, the plan shows which."""
    store = make_store()
    like = STUDIES.c[column].like("Smi%", escape="!")
    statement = select(STUDIES.c.study_instance_uid).where(like)
    compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(connection.exec_driver_sql(f"EXPLAIN {compiled}").scalars())
            assert f"ix_studies_{column}_prefix" in plan, plan
        else:
            plan = " ".join(row[-1] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}"))
            assert f"INDEX ix_studies_{column} ({column}>? AND {column}<?)" in plan, plan
