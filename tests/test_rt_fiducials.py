"""Spatial Fiducials (``…/rt/fiducials``) and the fiducial residuals of a registration.

Frames: the generator's registration maps the MR Frame of Reference into the CT's (its own).
The fiducials instance holds three markers in each frame; the CT ones are the MR ones mapped
by that matrix, except marker C, moved 2 mm along +z: its residual is 2 mm, the others' 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from factory import with_meta
from pydicom.uid import UID

from conformance import generate as gen
from conformance import phantoms

SEED = 7272
FIDUCIALS = UID("1.2.840.10008.5.1.4.1.1.66.2")
MR_POINTS = {"A": (10.0, -5.0, 3.0), "B": (-20.0, 15.0, -8.0), "C": (4.0, 30.0, 12.0)}


def fiducials_dataset(rt: gen.RtStudy):
    ds = gen._new_instance(FIDUCIALS, rt.instance_uid("fiducials"), rt.patient, rt.study)
    gen._set_series(ds, "FID", rt.series_uid("fiducials"), 9, "Markers", rt.study)
    ds.InstanceNumber, ds.ContentDate, ds.ContentTime = 1, "20240601", "120000"
    matrix = phantoms.mr_to_ct_matrix()
    sets = []
    for frame, points in (("mr", MR_POINTS), ("ct", {
            k: tuple(matrix[:3, :3] @ np.array(p) + matrix[:3, 3] + (0, 0, 2.0 * (k == "C")))
            for k, p in MR_POINTS.items()})):
        sets.append(gen._item(
            FrameOfReferenceUID=rt.for_mr if frame == "mr" else rt.for_ct,
            FiducialSequence=[gen._item(
                FiducialIdentifier=k, FiducialUID=rt.uid("fiducial", frame, k), ShapeType="POINT",
                NumberOfContourPoints=1, ContourData=[gen._ds(v) for v in p])
                for k, p in points.items()]))
    ds.FiducialSetSequence = sets
    return ds


@pytest.fixture(scope="module")
def stored(server) -> dict:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=4)
    fid = fiducials_dataset(rt)
    reg = gen.reg_dataset(rt)
    for item in reg.RegistrationSequence:
        frame = "mr" if item.FrameOfReferenceUID == rt.for_mr else "ct"
        item.UsedFiducialsSequence = [gen._item(
            ReferencedSOPClassUID=FIDUCIALS, ReferencedSOPInstanceUID=fid.SOPInstanceUID,
            FiducialUID=rt.uid("fiducial", frame, k)) for k in MR_POINTS]
    response = server.stow(with_meta(fid), with_meta(reg))
    assert response.status_code == 200, response.text
    base = f"{server.url}/studies/{rt.study.uid}/series"
    return {"fid": f"{base}/{fid.SeriesInstanceUID}/instances/{fid.SOPInstanceUID}",
            "reg": f"{base}/{reg.SeriesInstanceUID}/instances/{reg.SOPInstanceUID}", "rt": rt}


def test_fiducials_as_data(stored) -> None:
    body = requests.get(stored["fid"] + "/rt/fiducials", timeout=30).json()
    rt = stored["rt"]
    assert sorted(body["frames_of_reference"]) == sorted([rt.for_mr, rt.for_ct])
    mr = [f for f in body["fiducials"] if f["frame_of_reference_uid"] == rt.for_mr]
    assert [f["identifier"] for f in mr] == ["A", "B", "C"]
    assert mr[1]["points"] == [list(MR_POINTS["B"])] and mr[1]["shape_type"] == "POINT"
    assert not body["warnings"]


def test_registration_reports_fiducial_residuals(stored) -> None:
    body = requests.get(stored["reg"] + "/rt/registration", timeout=30).json()
    (residual,) = body["fiducial_residuals"]
    rt = stored["rt"]
    assert residual["from_frame_of_reference_uid"] == rt.for_mr
    assert residual["to_frame_of_reference_uid"] == rt.for_ct
    by_id = {f["identifier"]: f["residual_mm"] for f in residual["fiducials"]}
    assert by_id["A"] == pytest.approx(0, abs=1e-6) and by_id["B"] == pytest.approx(0, abs=1e-6)
    assert by_id["C"] == pytest.approx(2.0, abs=1e-6)
    assert residual["pairs"] == 3 and residual["max_mm"] == pytest.approx(2.0, abs=1e-6)
    assert residual["rms_mm"] == pytest.approx(np.sqrt(4 / 3), abs=1e-6)
    transform = requests.get(stored["reg"] + "/rt/registration/transform", timeout=30,
                             params={"from": rt.for_mr, "to": rt.for_ct}).json()
    assert transform["fiducial_residuals"][0]["max_mm"] == pytest.approx(2.0, abs=1e-6)


def test_fiducials_of_other_objects_do_not_exist(stored) -> None:
    assert requests.get(stored["reg"] + "/rt/fiducials", timeout=30).status_code == 404
