"""RT overlays through a Deformable Spatial Registration: the fused series and the dose wash
are sampled at each pixel's position mapped through the grid (tests/deformfield.py).

Frames: the registration's registered Frame of Reference is the CT's (FOR_CT), its source
the MR's (FOR_MR). A CT image fusing the MR series maps each CT pixel p to the MR point
``to_source(p)`` (the direct way, PS3.3 C.20.3.1.1); an MR image washed with a CT-frame dose
maps each MR pixel s to ``to_registered(s)`` (the inverse, by fixed-point iteration). Pixels
whose point falls outside the grid have no mapping: they keep the image, never a rigid guess.
The MR series is linear in x, y, z and the dose 40 Gy + 1 Gy/mm · x, so trilinear sampling
is exact and the expected overlay is analytic.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
import requests
from deformfield import (
    POST,
    PRE,
    deformable_registration,
    inside_grid,
    to_registered,
    to_source,
)
from factory import with_meta
from PIL import Image

from conformance import dvhset
from conformance import generate as gen
from dicomweb.rt import overlay

SEED = 5858  # no other module stores the generator's RT study with this seed
CT_INDEX = 2  # ct_slices=4: the slice at z = 0
MR_PIXEL_MM, MR_SIZE, MR_Z = 2.0, 81, (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
MR_ORIGIN = -80.0  # MR pixel centres at -80 … 80 mm in x and y
FUSE_WINDOW = (1000.0, 1600.0)
DOSE_AXIS = dvhset.grid_axis(3.0)


def mr_signal(points: np.ndarray) -> np.ndarray:
    """The MR series' value at MR-frame points (…, 3): linear, integer on its voxels."""
    return 1000.0 + points @ np.array([4.0, 3.0, 10.0])


def mr_linear_series(rt: gen.RtStudy) -> list:
    coords = MR_ORIGIN + MR_PIXEL_MM * np.arange(MR_SIZE)
    gx, gy = np.meshgrid(coords, coords)  # columns along x, rows along y
    out = []
    for index, z in enumerate(MR_Z):
        ds = gen._new_instance(gen.MR_IMAGE_STORAGE, rt.instance_uid("mrlin", index),
                               rt.patient, rt.study)
        gen._set_series(ds, "MR", rt.series_uid("mrlin"), 7, "Linear MR", rt.study)
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = rt.for_mr, ""
        ds.InstanceNumber = index + 1
        gen._set_image_plane(ds, [MR_ORIGIN, MR_ORIGIN, z], gen.AXIAL, MR_PIXEL_MM, 2.0)
        signal = mr_signal(np.stack([gx, gy, np.full_like(gx, z)], axis=-1))
        gen._set_mono_pixels(ds, np.rint(signal).astype(np.uint16), bits_stored=12)
        gen._set_mr_acquisition(ds)
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def stored(server) -> dict:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=0)
    ct, mr = gen.ct_series_datasets(rt), mr_linear_series(rt)
    reg = deformable_registration(rt)
    dose = dvhset.rtdose_dataset(dvhset.DvhSet(seed=SEED), 3.0, "x")  # 40 + x Gy, CT frame
    dose.StudyInstanceUID, dose.FrameOfReferenceUID = rt.study.uid, rt.for_ct
    dose.PatientName, dose.PatientID = rt.patient.name, rt.patient.patient_id
    rtstruct = gen.rtstruct_dataset(rt)  # contours in the CT frame
    response = server.stow(*[with_meta(ds) for ds in [*ct, *mr, reg, dose, rtstruct]])
    assert response.status_code == 200, response.text
    base = f"{server.url}/studies/{rt.study.uid}/series"
    assert rt.ct_z(CT_INDEX) == 0.0
    return {
        "ct": f"{base}/{ct[CT_INDEX].SeriesInstanceUID}/instances/{ct[CT_INDEX].SOPInstanceUID}",
        "mr": f"{base}/{mr[3].SeriesInstanceUID}/instances/{mr[3].SOPInstanceUID}",  # z = 0
        "mpr": f"{base}/{ct[0].SeriesInstanceUID}/mpr/axial",
        "mr_series": mr[0].SeriesInstanceUID, "reg": reg.SOPInstanceUID,
        "dose": dose.SOPInstanceUID, "rtstruct": rtstruct.SOPInstanceUID,
        "max_dose": float(dose.pixel_array.max() * float(dose.DoseGridScaling)),
    }


def png(url: str, status: int = 200, *, resource: str = "/rendered", **params) -> np.ndarray:
    response = requests.get(url + resource, params=params,
                            headers={"Accept": "image/png"}, timeout=120)
    assert response.status_code == status, (response.status_code, response.text[:500])
    return np.asarray(Image.open(BytesIO(response.content)).convert("RGB")).astype(np.uint8)


def pixel_centres(origin: float, spacing: float, size: int, z: float) -> np.ndarray:
    """Patient points (rows, cols, 3) of an axial image's pixel centres."""
    coords = origin + spacing * np.arange(size)
    gx, gy = np.meshgrid(coords, coords)
    return np.stack([gx, gy, np.full_like(gx, z)], axis=-1)


def test_fused_mr_is_the_mr_at_the_deformed_points(stored) -> None:
    plain = png(stored["ct"])
    image = png(stored["ct"], fuse=stored["mr_series"], registration=stored["reg"],
                fuse_window="1000,1600", opacity="1")
    p = pixel_centres(-250.0 + gen.CT_PIXEL_MM / 2, gen.CT_PIXEL_MM, gen.CT_SIZE, 0.0)
    inside = inside_grid(p)
    assert 10000 < inside.sum() < inside.size  # the grid covers part of the slice
    mapped = to_source(p.reshape(-1, 3)).reshape(p.shape)
    expected_values = np.where(inside, mr_signal(mapped), np.nan)
    expected = overlay.fuse(plain, expected_values, FUSE_WINDOW, 1.0)
    diff = np.abs(image.astype(int) - expected.astype(int)).max(axis=-1)
    assert diff.max() <= 1, diff.max()
    assert np.array_equal(image[~inside], plain[~inside])  # outside the grid: no mapping
    # Pre and post matrices alone (the field ignored, a rigid reading) give another picture.
    rigid_points = p.reshape(-1, 3) @ (POST @ PRE)[:3, :3].T + (POST @ PRE)[:3, 3]
    rigid = overlay.fuse(plain, np.where(inside, mr_signal(rigid_points).reshape(p.shape[:2]),
                                         np.nan), FUSE_WINDOW, 1.0)
    assert (np.abs(rigid.astype(int) - image.astype(int)).max(axis=-1) > 5).sum() > 1000


def test_mpr_fusion_goes_through_the_grid_too(stored) -> None:
    """The axial MPR plane at z = 0 of the CT volume is the CT slice's pixel grid: its fusion
    through the deformation is the rendered slice's."""
    fused = {"fuse": stored["mr_series"], "registration": stored["reg"],
             "fuse_window": "1000,1600", "opacity": "1"}
    plain = png(stored["mpr"], resource="", position="0")
    assert np.array_equal(plain, png(stored["ct"]))
    image = png(stored["mpr"], resource="", position="0", **fused)
    assert not np.array_equal(image, plain)
    assert np.abs(image.astype(int) - png(stored["ct"], **fused).astype(int)).max() <= 1


def test_dose_wash_through_the_inverse_mapping(stored) -> None:
    plain = png(stored["mr"])
    image = png(stored["mr"], dose=stored["dose"], registration=stored["reg"],
                opacity="1", isodose="30")
    s = pixel_centres(MR_ORIGIN, MR_PIXEL_MM, MR_SIZE, 0.0)
    q = to_registered(s.reshape(-1, 3)).reshape(s.shape)  # in the CT frame, where the dose is
    covered = inside_grid(q) & np.all((q >= DOSE_AXIS[0]) & (q <= DOSE_AXIS[-1]), axis=-1)
    assert covered.sum() > 500
    expected_dose = np.where(covered, 40.0 + q[..., 0], np.nan)
    expected = overlay.dose_wash(plain, expected_dose, max_dose=stored["max_dose"],
                                 opacity=1.0, isodose_levels=(30.0,))
    diff = np.abs(image.astype(int) - expected.astype(int)).max(axis=-1)
    # Pixels a hair from the 30 Gy line or the dose grid's edge may fall either side.
    assert (diff > 2).mean() < 0.01, (diff > 2).sum()
    washed = covered & (expected_dose > 31)
    assert washed.sum() > 300 and (diff[washed] <= 2).mean() > 0.99
    assert np.array_equal(image[~covered], plain[~covered])


def test_structures_through_a_deformation_are_refused(stored) -> None:
    response = requests.get(stored["mr"] + "/rendered", params={
        "structures": stored["rtstruct"], "registration": stored["reg"]},
        headers={"Accept": "image/png"}, timeout=60)
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["parameter"] == "registration"
    assert "Deformable Registration Grid" in error["message"] and "planar" in error["message"]
