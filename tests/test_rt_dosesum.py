"""Dose sums (``/studies/{s}/rt/dose/sum``) and their DVHs, on the analytic DVH set's doses.

All doses are in the set's one Frame of Reference (no registration) except the one moved
into another Frame of Reference on purpose. The set's linear fields are 40 Gy + 1 Gy/mm · x
(and · y), so the sum of the x and y doses is 80 Gy + x + y, exact under trilinear resampling.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import requests
from factory import with_meta
from PIL import Image
from pydicom.uid import generate_uid

from conformance import dvhset


@pytest.fixture(scope="module")
def doses(server) -> dict:
    dvh = dvhset.DvhSet(seed=7117)
    x1 = dvhset.rtdose_dataset(dvh, 1.0, "x")
    y2 = dvhset.rtdose_dataset(dvh, 2.0, "y")
    # The y dose again with twice the Dose Grid Scaling and half the stored values.
    y2_scaled = copy.deepcopy(y2)
    y2_scaled.SOPInstanceUID = generate_uid()
    y2_scaled.DoseGridScaling = 2 * dvhset.DOSE_SCALING_GY
    y2_scaled.PixelData = (np.frombuffer(y2.PixelData, "<u2") // 2).astype("<u2").tobytes()
    beam_x, beam_y = copy.deepcopy(x1), copy.deepcopy(y2)
    for ds in (beam_x, beam_y):
        ds.SOPInstanceUID = generate_uid()
        ds.DoseSummationType = "BEAM"
    relative = copy.deepcopy(x1)
    relative.SOPInstanceUID, relative.DoseUnits = generate_uid(), "RELATIVE"
    elsewhere = copy.deepcopy(y2)
    elsewhere.SOPInstanceUID, elsewhere.FrameOfReferenceUID = generate_uid(), generate_uid()
    structures = dvhset.rtstruct_dataset(dvh, 2.0)
    objects = [x1, y2, y2_scaled, beam_x, beam_y, relative, elsewhere, structures]
    response = server.stow(*[with_meta(ds) for ds in objects])
    assert response.status_code == 200, response.text
    names = ("x1", "y2", "y2_scaled", "beam_x", "beam_y", "relative", "elsewhere")
    return {"base": f"{server.url}/studies/{dvh.study.uid}/rt/dose/sum",
            "structures": structures.SOPInstanceUID,
            **{n: ds.SOPInstanceUID for n, ds in zip(names, objects, strict=False)}}


def node_points(body: dict) -> np.ndarray:
    """Patient coordinates (k, r, c, 3) of an axial grid's voxels from its JSON geometry."""
    g = body["grid"]
    cols, rows, slices = g["size"]
    c, r, k = np.arange(cols), np.arange(rows), np.asarray(g["slice_offsets"])
    x = g["origin"][0] + c * g["spacing"][0]
    y = g["origin"][1] + r * g["spacing"][1]
    z = g["origin"][2] + k
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.stack([xx, yy, zz], axis=-1)


def get(fixture: dict, path: str = "", **params) -> requests.Response:
    return requests.get(fixture["base"] + path, params=params, timeout=120)


def test_sum_is_the_sum_of_the_fields_on_the_first_grid(doses) -> None:
    response = get(doses, doses=f"{doses['x1']},{doses['y2_scaled']}",
                   accept="application/octet-stream")
    assert response.status_code == 200, response.text
    assert response.headers["X-Grid-Pixel-Spacing"] == "1,1"  # the first dose's (1 mm) grid
    assert response.headers["X-Dose-Summation-Type"] == "PLAN"
    info = get(doses, doses=f"{doses['x1']},{doses['y2_scaled']}").json()
    values = np.frombuffer(response.content, "<f4").reshape(
        [int(n) for n in response.headers["X-Grid-Shape"].split(",")])
    points = node_points(info)
    expected = 80 + points[..., 0] + points[..., 1]
    # Inside the 2 mm grid (its nodes span ±32 mm shifted by 0.3·2 mm) the y dose adds in.
    inside = np.all((points >= -32 + 0.6) & (points <= 32 + 0.6), axis=-1)
    assert inside.mean() > 0.9
    # Stored values are 0.002 Gy steps (0.004 Gy for the halved copy): rounding only.
    assert np.abs(values[inside] - expected[inside]).max() < 0.006
    outside = ~inside
    assert np.abs(values[outside] - (40 + points[outside][:, 0])).max() < 0.006
    assert info["doses"][0]["outside_fraction"] == 0
    assert info["doses"][1]["outside_fraction"] == pytest.approx(outside.mean(), abs=1e-6)
    assert info["doses"][1]["scaling"] == pytest.approx(0.004)
    assert info["units"] == "GY" and info["grid_of"] == doses["x1"]


def test_dvh_of_a_sum(doses) -> None:
    """80 + x + y over the sphere: mean and median 80 Gy (symmetric about x = y = 0)."""
    response = get(doses, "/dvh", doses=f"{doses['x1']},{doses['y2']}",
                   structures=doses["structures"], roi=1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metrics"]["mean_gy"] == pytest.approx(80, rel=2e-3)
    assert body["metrics"]["d50_gy"] == pytest.approx(80, rel=2e-3)
    assert body["metrics"]["volume_cc"] == pytest.approx(dvhset.truth("sphere", "x")["volume_cc"],
                                                         rel=1e-2)
    assert [d["sop_instance_uid"] for d in body["dose_sum"]["doses"]] == [doses["x1"],
                                                                          doses["y2"]]
    picture = get(doses, "/dvh", doses=f"{doses['x1']},{doses['y2']}",
                  structures=doses["structures"], roi="1,2", accept="image/png")
    assert picture.headers["content-type"] == "image/png"
    from io import BytesIO

    assert Image.open(BytesIO(picture.content)).size[0] > 100


def test_beam_doses_of_one_plan_sum_to_a_plan(doses) -> None:
    info = get(doses, doses=f"{doses['beam_x']},{doses['beam_y']}").json()
    assert info["summation_type"] == "PLAN"


@pytest.mark.parametrize(("pair", "status", "words"), [
    (("x1", "beam_y"), 422, "already holds it"),  # the PLAN dose holds its beams
    (("x1", "relative"), 422, "Dose Units"),
    (("x1", "elsewhere"), 422, "registration"),
    (("x1", "x1"), 400, "twice"),
])
def test_what_cannot_be_summed(doses, pair, status, words) -> None:
    response = get(doses, doses=",".join(doses[p] for p in pair))
    assert response.status_code == status, response.text
    assert words in response.text


def test_unknown_or_missing_doses(doses, server) -> None:
    assert get(doses).status_code == 400
    response = get(doses, doses=f"{doses['x1']},{generate_uid()}")
    assert response.status_code == 404 and "doses" in response.text
    response = get(doses, doses=doses["structures"])  # an RTSTRUCT is not a dose
    assert response.status_code == 404
