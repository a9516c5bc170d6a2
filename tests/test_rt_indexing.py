"""RT index rows built where the instance is parsed (`ingest.parse_part`, an ingest worker for
STOW) are the rows the ORM made from the stored file: every column of every RT table, keys
included, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, SQLModel
from test_rt_tables import _instances

from conformance import generate as gen
from conformance.rtrecords import rtrecord_dataset
from dicomweb.ingest import IngestedInstance, parse_part
from dicomweb.rt.indexing import RT_DEFER_SIZE, UNPARSEABLE, index_hook
from dicomweb.rt.tables import RT_TABLES, index_rt_instance

POSTGRES_ENV = "DICOMWEB_TEST_POSTGRES_URL"


def _databases(backend: str, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Two empty databases with the RT tables: the ORM's rows go to one, the parse's to the
    other (both from empty, so their generated keys can be compared)."""
    if backend == "sqlite":
        engines = [create_engine(f"sqlite:///{tmp_path / f'{n}.db'}") for n in ("orm", "parse")]
        for engine in engines:
            SQLModel.metadata.create_all(engine, tables=RT_TABLES)
        yield engines[0], engines[1]
        for engine in engines:
            engine.dispose()
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"PostgreSQL tests skipped: set {POSTGRES_ENV}")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    names = [f"dicomweb_rtidx_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rpartition("/")[0]
    engines = [create_engine(f"{base}/{name}") for name in names]
    try:
        for engine in engines:
            SQLModel.metadata.create_all(engine, tables=RT_TABLES)
        yield engines[0], engines[1]
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request, tmp_path) -> Iterator[tuple[Engine, Engine]]:
    yield from _databases(request.param, tmp_path)


def _rt_objects() -> list[Dataset]:
    rt = gen.RtStudy(seed=4242, ct_slices=4, mr_slices=2)
    plan = gen.rtplan_dataset(rt)
    beam = int(plan.FractionGroupSequence[0].ReferencedBeamSequence[0].ReferencedBeamNumber)
    broken = gen.rtstruct_dataset(rt)
    broken.SOPInstanceUID = f"{broken.SOPInstanceUID}.9"
    broken.ROIContourSequence[0].ContourSequence[0].ContourData = [1.0, 2.0]  # not triplets
    return [
        *_instances(),
        gen.rtstruct_dataset(rt), plan, gen.rtdose_dataset(rt), gen.reg_dataset(rt),
        rtrecord_dataset(rt, 1, {beam: (100.0, "NORMAL")}, date="20240610"),
        rtrecord_dataset(rt, 2, {beam: (12.5, "OPERATOR")}, date="20240611", ion=True),
        *(pydicom.dcmread(get_testdata_file(name), force=True)
          for name in ("rtstruct.dcm", "rtplan.dcm", "rtdose.dcm")),
        broken,
    ]


def _written(ds: Dataset, folder: Path, index: int) -> Path:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):  # ingest requires them
        if keyword not in ds:
            setattr(ds, keyword, f"1.2.826.0.1.3680043.10.1311.{index}.{len(keyword)}")
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        return gen.write(ds, folder / f"{index}.dcm")
    path = folder / f"{index}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _table_rows(engine: Engine) -> dict[str, list[tuple]]:
    with engine.connect() as connection:
        return {table.name: [tuple(row) for row in connection.execute(
            table.select().order_by(*table.primary_key.columns))] for table in RT_TABLES}


def test_rows_built_at_parse_are_the_orms(databases, tmp_path) -> None:
    orm, parsed_db = databases
    orm_warnings, parse_warnings = [], []
    for index, ds in enumerate(_rt_objects()):
        path = _written(ds, tmp_path, index)
        # Today's way, as the server process did after storing: the file read again, the ORM.
        with orm.begin() as connection:
            session = Session(bind=connection)
            try:
                orm_warnings.append(index_rt_instance(
                    session, pydicom.dcmread(path, defer_size=RT_DEFER_SIZE)))
                session.flush()
            except Exception:
                session.expunge_all()
                orm_warnings.append([UNPARSEABLE])
        # Built with the parse, crossing a process boundary (pickled) as from the pool.
        ingested = parse_part(path)
        assert isinstance(ingested, IngestedInstance)
        assert ingested.rt_rows is not None
        ingested = pickle.loads(pickle.dumps(ingested))
        path.unlink()  # the server process must not need the file again
        with parsed_db.begin() as connection:
            parse_warnings.append(index_hook(connection, ingested))
    assert parse_warnings == orm_warnings
    assert parse_warnings[-1]  # the damaged contour's
    expected, found = _table_rows(orm), _table_rows(parsed_db)
    assert found == expected
    assert all(expected[name] for name in ("rt_contours", "rt_control_points", "rt_doses",
                                           "transformation_matrices", "rt_treatment_record_beams"))


def test_non_rt_instance_has_no_rows(tmp_path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ingested = parse_part(_written(ds, tmp_path, 0))
    assert isinstance(ingested, IngestedInstance) and ingested.rt_rows is None
