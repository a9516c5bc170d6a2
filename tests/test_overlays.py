"""RT overlays on rendered and MPR images: structures, dose, fusion (SQLite and PostgreSQL)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
import requests
from factory import with_meta
from PIL import Image

from conformance import generate as gen
from conformance import phantoms

SEED = 7777  # no other module stores the generator's RT study with this seed
CT_INDEX = 10  # the CT slice at z = 0, through the sphere centre
PTV_RED = (255, 0, 0)
BODY_GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def rt(server) -> dict:
    study = gen.RtStudy(seed=SEED, ct_slices=20, mr_slices=40)
    datasets = gen.ct_series_datasets(study) + gen.mr_series_datasets(study) + [
        gen.rtstruct_dataset(study), gen.rtdose_dataset(study), gen.reg_dataset(study)]
    for start in range(0, len(datasets), 20):
        response = server.stow(*[with_meta(ds) for ds in datasets[start:start + 20]])
        assert response.status_code == 200, response.text
    truth = gen.ground_truth(study)
    s, se, so = (truth["study_instance_uid"], truth["series_instance_uids"],
                 truth["sop_instance_uids"])
    assert study.ct_z(CT_INDEX) == phantoms.SPHERE_CENTRE[2]
    return {
        "truth": truth,
        "ct": f"{server.url}/studies/{s}/series/{se['ct']}/instances/{so['ct'][CT_INDEX]}",
        "mpr": f"{server.url}/studies/{s}/series/{se['ct']}/mpr",
        "rtstruct": so["rtstruct"], "rtdose": so["rtdose"], "reg": so["reg"],
        "mr_series": se["mr"],
    }


def png(url: str, **params) -> tuple[np.ndarray, requests.structures.CaseInsensitiveDict]:
    response = requests.get(url, params=params, headers={"Accept": "image/png"}, timeout=60)
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(BytesIO(response.content)).convert("RGB")).astype(int)
    return image, response.headers


def error(url: str, status: int, parameter: str, **params) -> dict:
    response = requests.get(url, params=params, headers={"Accept": "image/png"}, timeout=60)
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()["error"]
    assert body["parameter"] == parameter, body
    return body


def ct_pixel(x: float, y: float) -> tuple[float, float]:
    """(row, column) of CT patient (x, y) mm on the generator's axial CT slices."""
    origin = -250.0 + gen.CT_PIXEL_MM / 2
    return (y - origin) / gen.CT_PIXEL_MM, (x - origin) / gen.CT_PIXEL_MM


def colour_mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.array(colour), axis=-1)


def near(mask: np.ndarray, row: float, col: float, radius: int = 2) -> bool:
    r, c = int(round(row)), int(round(col))
    return bool(mask[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1].any())


def is_gray(pixel: np.ndarray) -> bool:
    return pixel[0] == pixel[1] == pixel[2]


# --- structures ------------------------------------------------------------------------
def test_structures_draw_the_ptv_outline_on_the_ct_slice(rt: dict) -> None:
    plain, _ = png(rt["ct"] + "/rendered")
    assert all(is_gray(p) for p in plain.reshape(-1, 3)[::997])
    image, _ = png(rt["ct"] + "/rendered", structures=rt["rtstruct"])
    assert image.shape == plain.shape
    red = colour_mask(image, PTV_RED)
    cx, cy, _ = phantoms.SPHERE_CENTRE
    radius = phantoms.SPHERE_RADIUS
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        row, col = ct_pixel(cx + radius * np.cos(angle), cy + radius * np.sin(angle))
        assert near(red, row, col), angle
    rows, cols = np.nonzero(red)
    crow, ccol = ct_pixel(cx, cy)
    distance_mm = np.hypot(rows - crow, cols - ccol) * gen.CT_PIXEL_MM
    assert distance_mm.min() > radius - 2.5 and distance_mm.max() < radius + 2.5
    # The BODY outline (green, radius 150 mm about the origin) is drawn too.
    green = colour_mask(image, BODY_GREEN)
    assert near(green, *ct_pixel(150.0, 0.0)) and near(green, *ct_pixel(0.0, -150.0))
    # Away from any contour the image is the plain rendering.
    assert np.array_equal(image[:40, :40], plain[:40, :40])


def test_rois_choose_the_structures(rt: dict) -> None:
    ptv, _ = png(rt["ct"] + "/rendered", structures=rt["rtstruct"], rois="2")
    assert colour_mask(ptv, PTV_RED).sum() > 100
    assert not colour_mask(ptv, BODY_GREEN).any()
    body, _ = png(rt["ct"] + "/rendered", structures=rt["rtstruct"], rois="1")
    assert colour_mask(body, BODY_GREEN).sum() > 100
    assert not colour_mask(body, PTV_RED).any()
    # The frame resource takes the same parameters.
    frame, _ = png(rt["ct"] + "/frames/1/rendered", structures=rt["rtstruct"], rois="2")
    assert np.array_equal(frame, ptv)


def test_mpr_sagittal_draws_the_ptv_outline(rt: dict) -> None:
    cx, cy, cz = phantoms.SPHERE_CENTRE
    image, headers = png(rt["mpr"] + "/sagittal", position=str(cx),
                         structures=rt["rtstruct"], rois="2")
    origin = np.array([float(v) for v in headers["X-Plane-Origin"].split(",")])
    row_dir = np.array([float(v) for v in headers["X-Plane-Row-Direction"].split(",")])
    col_dir = np.array([float(v) for v in headers["X-Plane-Column-Direction"].split(",")])
    spacing = [float(v) for v in headers["X-Plane-Pixel-Spacing"].split(",")]

    def pixel(y: float, z: float) -> tuple[float, float]:
        rel = np.array([cx, y, z]) - origin
        return rel @ col_dir / spacing[0], rel @ row_dir / spacing[1]

    red = colour_mask(image, PTV_RED)
    radius = phantoms.SPHERE_RADIUS
    assert near(red, *pixel(cy - radius, cz)) and near(red, *pixel(cy + radius, cz))
    # The contour plane at z = 12 mm has radius sqrt(25² - 12²).
    r12 = float(np.sqrt(radius**2 - 12.0**2))
    assert near(red, *pixel(cy - r12, 12.0)) and near(red, *pixel(cy + r12, 12.0))
    assert not near(red, *pixel(cy, cz), radius=10)  # nothing inside
    rows, cols = np.nonzero(red)
    points = origin + np.outer(cols * spacing[1], row_dir) + np.outer(rows * spacing[0], col_dir)
    assert np.all(np.abs(points[:, 1] - cy) < radius + 2.5)
    assert np.all(np.abs(points[:, 2] - cz) < radius + 2.5)


# --- dose --------------------------------------------------------------------------------
def test_dose_tints_the_high_dose_region_only(rt: dict) -> None:
    plain, _ = png(rt["ct"] + "/rendered")
    image, _ = png(rt["ct"] + "/rendered", dose=rt["rtdose"])
    row, col = (int(round(v)) for v in ct_pixel(phantoms.SPHERE_CENTRE[0] + 3,
                                                phantoms.SPHERE_CENTRE[1] + 3))
    assert not is_gray(image[row, col])  # 65 Gy: tinted (jet red end)
    assert image[row, col, 0] > image[row, col, 2]
    assert np.array_equal(image[5, 5], plain[5, 5]) and is_gray(image[5, 5])  # no dose there
    levels, _ = png(rt["ct"] + "/rendered", dose=rt["rtdose"], isodose="20,40,60",
                    opacity="0.2")
    assert not np.array_equal(levels, image)
    assert np.array_equal(levels[5, 5], plain[5, 5])


# --- fusion ------------------------------------------------------------------------------
def test_fused_mr_lands_on_the_ct_sphere(rt: dict) -> None:
    plain, _ = png(rt["ct"] + "/rendered")
    image, _ = png(rt["ct"] + "/rendered", fuse=rt["mr_series"], registration=rt["reg"])
    assert not np.array_equal(image, plain)
    # The MR sphere (signal 2000, white in the hot map at the MR's window 1000/2000) blends
    # to a bright disc whose blue channel rises; elsewhere (MR signal <= 800, no blue in the
    # hot map) the blue channel falls.
    disc = image[..., 2] - plain[..., 2] > 30
    rows, cols = np.nonzero(disc)
    assert rows.size > 0
    crow, ccol = ct_pixel(phantoms.SPHERE_CENTRE[0], phantoms.SPHERE_CENTRE[1])
    offset_mm = np.hypot(rows.mean() - crow, cols.mean() - ccol) * gen.CT_PIXEL_MM
    assert offset_mm < 2.0, offset_mm
    area = rows.size * gen.CT_PIXEL_MM**2
    assert abs(area / (np.pi * phantoms.SPHERE_RADIUS**2) - 1) < 0.2
    # fuse_window and opacity change the blend.
    other, _ = png(rt["ct"] + "/rendered", fuse=rt["mr_series"], registration=rt["reg"],
                   fuse_window="500,3000", opacity="0.8")
    assert not np.array_equal(other, image)


# --- errors ------------------------------------------------------------------------------
def test_overlay_errors_name_the_parameter(rt: dict) -> None:
    url = rt["ct"] + "/rendered"
    body = error(url, 422, "registration", fuse=rt["mr_series"])
    assert "Frames of Reference differ" in body["message"]
    error(url, 404, "structures", structures="1.2.3.4.5.6.7.8.9")
    error(url, 404, "dose", dose=rt["rtstruct"])  # stored, but not an RT Dose
    error(url, 404, "fuse", fuse="1.2.3.4.5.6.7.8.9")
    error(url, 404, "rois", structures=rt["rtstruct"], rois="2,99")
    error(url, 400, "rois", structures=rt["rtstruct"], rois="abc")
    error(url, 400, "structures", structures="not-a-uid")
    error(url, 400, "isodose", dose=rt["rtdose"], isodose="10,x")
    error(url, 400, "opacity", dose=rt["rtdose"], opacity="2")
    error(url, 400, "fuse_window", fuse=rt["mr_series"], fuse_window="100")
    error(url, 400, "rois", rois="1")  # without structures
    error(url, 400, "bitdepth", structures=rt["rtstruct"], bitdepth="16")
    response = requests.get(rt["mpr"] + "/axial", params={"structures": rt["rtstruct"]},
                            headers={"Accept": "application/json"}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "structures"
