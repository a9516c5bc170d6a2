"""RT index tables on SQLite (temp file) and, if reachable, PostgreSQL (private schema)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import text
from sqlmodel import Session, SQLModel, create_engine, func, select
from test_rt_dose import rtdose_dataset
from test_rt_plan import arc_plan
from test_rt_registration import MR, MR_TO_CT, reg_item, registration_dataset
from test_rt_structures import box_contours, rtstruct_dataset, sphere_contours

from dicomweb.rt import NotAnRtObject
from dicomweb.rt.tables import (
    RT_ROW_MODELS,
    RT_TABLES,
    FrameOfReferenceUidRow,
    RtBeamRow,
    RtContourRow,
    RtControlPointRow,
    RtDoseRow,
    RtPlanRow,
    RtStructureRow,
    TransformationMatrixRow,
    contour_points_from_blob,
    delete_rt_rows,
    index_rt_instance,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'rt.db'}")
        SQLModel.metadata.create_all(eng, tables=RT_TABLES)
        yield eng
        eng.dispose()
        return
    # The session's database (DICOMWEB_TEST_POSTGRES_URL; skipped without it), in a schema
    # of this test's own.
    schema = f"rt_test_{uuid.uuid4().hex[:10]}"
    admin = sa_create_engine(request.getfixturevalue("postgres_database"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = admin.execution_options(schema_translate_map={None: schema})
    try:
        SQLModel.metadata.create_all(eng, tables=RT_TABLES)
        yield eng
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _instances() -> list[Dataset]:
    from dicomweb.rt import Grid

    grid = Grid.regular((-30.0, -30.0, -30.0), (2.5, 2.5, 2.5), (25, 25, 25))
    values = np.linspace(0, 2, grid.shape[0] * grid.shape[1] * grid.shape[2]).reshape(grid.shape)
    return [
        rtstruct_dataset({1: sphere_contours(20, 2.5), 2: box_contours((0, 0, 0), (10, 10, 10),
                                                                      2)},
                         point_rois={3: (1.0, 2.0, 3.0)}),
        arc_plan(),
        rtdose_dataset(grid, values),
        registration_dataset("1.2.3.1", [reg_item(MR, [MR_TO_CT])]),
    ]


def test_index_and_delete(engine) -> None:
    structs, plan, dose, reg = _instances()
    with Session(engine) as session:
        for ds in (structs, plan, dose, reg):
            assert index_rt_instance(session, ds) == [] or ds is reg
        session.commit()
        rois = session.exec(select(RtStructureRow).order_by(RtStructureRow.roi_number)).all()
        assert [r.roi_number for r in rois] == [1, 2, 3]
        assert rois[0].volume_cc == pytest.approx(33.51, rel=0.01)
        # A flat box contoured mid-slab: the default end cap stops at its end planes.
        assert rois[1].volume_cc == pytest.approx(0.8)
        assert json.loads(rois[0].display_color) == [255, 0, 1]
        assert rois[2].centroid_x == pytest.approx(1.0)
        contour = session.exec(select(RtContourRow).where(RtContourRow.roi_number == 2)).first()
        pts = contour_points_from_blob(contour.points)
        assert pts.shape == (4, 3) and contour.referenced_sop_instance_uid == "1.2.3.4.5.6.0"
        plan_row = session.exec(select(RtPlanRow)).one()
        assert plan_row.referenced_structure_set_uid == "1.2.3.4.100"
        beam = session.exec(select(RtBeamRow)).one()
        assert beam.meterset == 400 and beam.energy == 6
        cps = session.exec(select(RtControlPointRow).order_by(
            RtControlPointRow.control_point_index)).all()
        assert [c.jaw_y1 for c in cps] == [-60, -60, -40]
        dose_row = session.exec(select(RtDoseRow)).one()
        assert dose_row.max_dose == pytest.approx(2.0, abs=1e-3)
        assert json.loads(dose_row.grid)["rows"] == 25
        m = session.exec(select(TransformationMatrixRow)).one()
        assert m.source_frame_of_reference_uid == MR
        assert m.target_frame_of_reference_uid == "1.2.3.1"
        np.testing.assert_allclose(json.loads(m.matrix), MR_TO_CT, atol=1e-9)
        roles = {r.role for r in session.exec(select(FrameOfReferenceUidRow)).all()}
        assert roles == {"referenced", "own", "registered", "registration_source"}
        uids = [str(ds.SOPInstanceUID) for ds in (structs, plan, dose, reg)]
        assert delete_rt_rows(session, uids) > 0
        session.commit()
        for model in RT_ROW_MODELS:
            assert session.exec(select(func.count()).select_from(model)).one() == 0


def test_pydicom_files_index(engine) -> None:
    with Session(engine) as session:
        for name in ("rtstruct.dcm", "rtplan.dcm", "rtdose.dcm"):
            index_rt_instance(session, pydicom.dcmread(get_testdata_file(name), force=True))
        session.commit()
        assert session.exec(select(func.count()).select_from(RtContourRow)).one() == 5


def test_non_rt_instance_rejected() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3"
    with pytest.raises(NotAnRtObject):
        index_rt_instance(None, ds)  # type: ignore[arg-type]
