"""Deformable Spatial Registration applied: points through ``…/rt/registration/transform``
with x, y, z, and a dose resampled through the deformation onto an image series.

Frames: the registration's own (registered) Frame of Reference is the CT's; the source Frame
of Reference is the generator's MR frame, where the dose lies. Per PS3.3 C.20.3.1.1 a CT
point p maps to the MR point Post · (Pre · p + D(p)). The field is D(p) = A · p + t, linear,
so trilinear interpolation between grid points reproduces it exactly and the inverse is
known in closed form: p = (I + A)⁻¹ · (Post⁻¹ · s − pre_shift − t).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from deformfield import (
    deformable_registration,
    inside_grid,
    to_registered,
    to_source,
)
from factory import with_meta

from conformance import dvhset
from conformance import generate as gen

SEED = 3131


@pytest.fixture(scope="module")
def stored(server) -> dict:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=0)
    ct = gen.ct_series_datasets(rt)
    dose = dvhset.rtdose_dataset(dvhset.DvhSet(seed=SEED), 2.0, "x")  # 40 Gy + 1 Gy/mm · x
    dose.StudyInstanceUID, dose.FrameOfReferenceUID = rt.study.uid, rt.for_mr
    dose.PatientName, dose.PatientID = rt.patient.name, rt.patient.patient_id
    reg = deformable_registration(rt)
    ct_dose = dvhset.rtdose_dataset(dvhset.DvhSet(seed=SEED + 1), 3.0, "x")  # in the CT frame
    ct_dose.StudyInstanceUID, ct_dose.FrameOfReferenceUID = rt.study.uid, rt.for_ct
    ct_dose.PatientName, ct_dose.PatientID = rt.patient.name, rt.patient.patient_id
    response = server.stow(*[with_meta(ds) for ds in [*ct, dose, reg, ct_dose]])
    assert response.status_code == 200, response.text
    base = f"{server.url}/studies/{rt.study.uid}/series"
    return {"rt": rt, "ct_series": ct[0].SeriesInstanceUID,
            "reg": f"{base}/{reg.SeriesInstanceUID}/instances/{reg.SOPInstanceUID}",
            "reg_uid": reg.SOPInstanceUID, "dose_uid": dose.SOPInstanceUID,
            "ct_dose_uid": ct_dose.SOPInstanceUID,
            "sum": f"{server.url}/studies/{rt.study.uid}/rt/dose/sum",
            "dose": f"{base}/{dose.SeriesInstanceUID}/instances/{dose.SOPInstanceUID}"}


def transform(stored: dict, frm: str, to: str, point=None) -> requests.Response:
    params = {"from": frm, "to": to}
    if point is not None:
        params.update(zip("xyz", (str(v) for v in point), strict=True))
    return requests.get(stored["reg"] + "/rt/registration/transform", params=params, timeout=30)


@pytest.mark.parametrize("point", [(0.0, 0.0, 0.0), (12.5, -33.0, 7.25), (-59.0, 58.0, -29.0)])
def test_points_through_the_grid_both_ways(stored, point) -> None:
    rt = stored["rt"]
    p = np.array(point)
    body = transform(stored, rt.for_ct, rt.for_mr, point).json()
    assert body["deformable"] and body["inside_grid"]
    np.testing.assert_allclose(body["mapped"], to_source(p), atol=1e-4)
    back = transform(stored, rt.for_mr, rt.for_ct, body["mapped"]).json()
    np.testing.assert_allclose(back["mapped"], p, atol=1e-4)
    np.testing.assert_allclose(back["mapped"], to_registered(np.array(body["mapped"])),
                               atol=1e-4)


def test_points_outside_the_grid_have_no_mapping(stored) -> None:
    rt = stored["rt"]
    body = transform(stored, rt.for_ct, rt.for_mr, (61.0, 0.0, 0.0)).json()
    assert body["mapped"] is None and body["inside_grid"] is False
    far = to_source(np.array([0.0, 0.0, 45.0]))  # its registered point lies above the grid
    assert transform(stored, rt.for_mr, rt.for_ct, far).json()["mapped"] is None


def test_a_matrix_cannot_stand_for_the_grid(stored) -> None:
    rt = stored["rt"]
    response = transform(stored, rt.for_ct, rt.for_mr)
    assert response.status_code == 422 and "x, y, z" in response.text


def test_dose_resampled_through_the_deformation(stored) -> None:
    response = requests.get(stored["dose"] + "/rt/dose/values", timeout=120, params={
        "series": stored["ct_series"], "registration": stored["reg_uid"]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Registration-Mapping"] == "deformable"
    h = response.headers
    shape = [int(v) for v in h["X-Grid-Shape"].split(",")]
    values = np.frombuffer(response.content, "<f4").reshape(shape)

    def vec(name: str) -> np.ndarray:
        return np.array([float(v) for v in h[name].split(",")])

    row_spacing, col_spacing = vec("X-Grid-Pixel-Spacing")
    k, r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), np.arange(shape[2]),
                          indexing="ij")
    p = (vec("X-Grid-Origin") + (c * col_spacing)[..., None] * vec("X-Grid-Row-Direction")
         + (r * row_spacing)[..., None] * vec("X-Grid-Column-Direction")
         + vec("X-Grid-Slice-Offsets")[k][..., None] * vec("X-Grid-Normal"))
    q = to_source(p.reshape(-1, 3)).reshape(p.shape)
    axis = dvhset.grid_axis(2.0)
    in_dose = np.all((q >= axis[0] + 1e-3) & (q <= axis[-1] - 1e-3), axis=-1)
    covered = inside_grid(p) & in_dose
    assert covered.sum() > 1000
    np.testing.assert_allclose(values[covered], 40 + q[covered][:, 0], atol=2e-3)
    assert np.isnan(values[~inside_grid(p)]).all()  # no mapping outside the grid


def test_dose_sum_through_the_deformation(stored) -> None:
    """A CT-frame dose (40 + x on a 3 mm grid) plus the MR-frame dose through the grid: on
    the first dose's nodes p, 80 + p_x + to_source(p)_x where the MR dose covers them."""
    body = requests.get(stored["sum"], timeout=120, params={
        "doses": f"{stored['ct_dose_uid']},{stored['dose_uid']}",
        "registration": stored["reg_uid"]}).json()
    assert body["doses"][1]["registration"] == stored["reg_uid"]
    g = body["grid"]
    cols, rows, _ = g["size"]
    z = g["origin"][2] + np.asarray(g["slice_offsets"])
    y = g["origin"][1] + np.arange(rows) * g["spacing"][1]
    x = g["origin"][0] + np.arange(cols) * g["spacing"][0]
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    p = np.stack([xx, yy, zz], axis=-1)
    q = to_source(p.reshape(-1, 3)).reshape(p.shape)
    axis = dvhset.grid_axis(2.0)
    covered = inside_grid(p) & np.all((q >= axis[0] + 1e-3) & (q <= axis[-1] - 1e-3), axis=-1)
    values = np.asarray(body["values"], dtype=float)
    assert covered.sum() > 1000
    np.testing.assert_allclose(values[covered], 80 + p[covered][:, 0] + q[covered][:, 0],
                               atol=3e-3)
