"""End to end: the RT API on the generator's analytic RT study (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy

import factory
import numpy as np
import pytest
import requests
from factory import with_meta
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from conformance import generate as gen
from conformance import phantoms

SEED = 4242  # other modules store the generator's default-seed study with other sizes
HARD = [("absolute", "axial"), ("relative", "sagittal")]


def stow_all(server, datasets: list[Dataset], batch: int = 20) -> None:
    for start in range(0, len(datasets), batch):
        response = server.stow(*[with_meta(ds) for ds in datasets[start:start + batch]])
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def rt(server) -> dict:
    study = gen.RtStudy(seed=SEED, ct_slices=20, mr_slices=40)
    stow_all(server, gen.ct_series_datasets(study))
    stow_all(server, gen.mr_series_datasets(study))
    objects = [gen.rtstruct_dataset(study), gen.rtplan_dataset(study), gen.rtdose_dataset(study),
               gen.reg_dataset(study)]
    objects += [gen.rtdose_dataset(study, offsets=o, orientation=d) for o, d in HARD]
    stow_all(server, objects)
    truth = gen.ground_truth(study, HARD)
    s, se, so = (truth["study_instance_uid"], truth["series_instance_uids"],
                 truth["sop_instance_uids"])

    def url(role: str, index: int | None = None) -> str:
        sop = so[role] if index is None else so[role][index]
        return f"{server.url}/studies/{s}/series/{se[role]}/instances/{sop}"

    return {"truth": truth, "url": url, "study": study, "base": server.url}


def get(url: str, expect: int = 200, **params) -> requests.Response:
    response = requests.get(url, params=params or None, timeout=60)
    assert response.status_code == expect, (url, response.status_code, response.text[:500])
    return response


def error(url: str, status: int, parameter: str | None = None, **params) -> dict:
    body = get(url, status, **params).json()["error"]
    assert body["status"] == status and body["message"]
    if parameter:
        assert body["parameter"] == parameter
    return body


# --- structures ------------------------------------------------------------------------
def test_rois_match_the_analytic_geometry(rt: dict) -> None:
    # The phantom's flat-ended ROIs (body, box, ring) reach the edges of the slabs of their
    # end planes (conformance.phantoms), which is the half-slab end cap.
    body = get(rt["url"]("rtstruct") + "/rt/rois", endcap="half").json()
    truth = rt["truth"]
    assert body["warnings"] == []
    assert body["frame_of_reference_uids"] == [truth["frame_of_reference_uids"]["FOR_CT"]]
    rois = {r["name"]: r for r in body["rois"]}
    assert set(rois) == {"BODY", "PTV_SPHERE", "ORGAN_BOX", "RING_HOLLOW_CYLINDER",
                         "POINT_MARKER"}
    for name, expected in truth["rois"].items():
        roi = rois[name]
        assert roi["number"] == truth["roi_numbers"][name]
        assert roi["frame_of_reference_uid"] == truth["frame_of_reference_uids"]["FOR_CT"]
        if expected["volume_within_ct_extent_cm3"] > 5:
            assert roi["volume_cc"] == pytest.approx(expected["volume_within_ct_extent_cm3"],
                                                     rel=0.01), name
        assert np.allclose(roi["centroid"], expected["centroid_mm"], atol=0.5), name
    assert rois["PTV_SPHERE"]["interpreted_type"] == "PTV"
    assert rois["PTV_SPHERE"]["display_color"] == [255, 0, 0]
    assert rois["PTV_SPHERE"]["bounds"]["min"][0] == pytest.approx(-5.0)
    point = rois["POINT_MARKER"]
    assert point["contour_count"] == 1 and point["volume_cc"] == 0
    assert np.allclose(point["centroid"], phantoms.POINT_MARKER, atol=1e-3)


def test_roi_with_contours(rt: dict) -> None:
    ct = rt["truth"]["sop_instance_uids"]["ct"]
    body = get(rt["url"]("rtstruct") + "/rt/rois/2").json()
    assert body["name"] == "PTV_SPHERE" and body["geometric_types"] == ["CLOSED_PLANAR"]
    assert len(body["contours"]) == body["contour_count"] == 17
    for contour in body["contours"]:
        pts = np.array(contour["points"])
        assert pts.shape == (contour["number_of_points"], 3)
        radius = np.hypot(pts[:, 0] - 20.0, pts[:, 1] + 10.0)
        assert np.allclose(radius, np.sqrt(25.0**2 - pts[0, 2] ** 2), atol=1e-3)
        assert contour["referenced_sop_instance_uid"] in ct
    point = get(rt["url"]("rtstruct") + "/rt/rois/5").json()["contours"]
    assert point[0]["geometric_type"] == "POINT"
    assert np.allclose(point[0]["points"], [phantoms.POINT_MARKER], atol=1e-3)


def test_mask_on_the_ct_grid(rt: dict) -> None:
    truth = rt["truth"]
    ct_series = truth["series_instance_uids"]["ct"]
    body = get(rt["url"]("rtstruct") + "/rt/rois/2/mask", series=ct_series).json()
    voxel = gen.CT_PIXEL_MM**2 * gen.CT_SLICE_MM
    expected = truth["rois"]["PTV_SPHERE"]["volume_cm3"] * 1000 / voxel
    assert body["voxel_count"] == pytest.approx(expected, rel=0.01)
    assert body["shape"] == [20, 512, 512]
    runs = np.array(body["runs"]).reshape(-1, 2)
    assert runs[:, 1].sum() == body["voxel_count"]
    binary = get(rt["url"]("rtstruct") + "/rt/rois/2/mask", series=ct_series,
                 accept="application/octet-stream")
    mask = np.frombuffer(binary.content, dtype=np.uint8).reshape(20, 512, 512)
    assert int(mask.sum()) == body["voxel_count"]
    flat = mask.ravel()
    assert flat[runs[0, 0]] == 1 and flat[runs[0, 0] - 1] == 0
    assert binary.headers["X-Grid-Shape"] == "20,512,512"
    assert binary.headers["X-Frame-Of-Reference-UID"] == truth["frame_of_reference_uids"]["FOR_CT"]
    # Centre of mass in voxel indices → patient mm = the sphere centre.
    k, r, c = (np.array(np.nonzero(mask)).mean(axis=1))
    origin = [float(v) for v in binary.headers["X-Grid-Origin"].split(",")]
    centre = [origin[0] + c * gen.CT_PIXEL_MM, origin[1] + r * gen.CT_PIXEL_MM,
              origin[2] + k * gen.CT_SLICE_MM]
    assert np.allclose(centre, phantoms.SPHERE_CENTRE, atol=0.5)


def test_mask_on_mr_needs_and_follows_the_registration(rt: dict) -> None:
    truth = rt["truth"]
    mr_series = truth["series_instance_uids"]["mr"]
    url = rt["url"]("rtstruct") + "/rt/rois/2/mask"
    error(url, 422, "registration", series=mr_series)
    binary = get(url, series=mr_series, registration=truth["sop_instance_uids"]["reg"],
                 accept="application/octet-stream")
    shape = [int(v) for v in binary.headers["X-Grid-Shape"].split(",")]
    mask = np.frombuffer(binary.content, dtype=np.uint8).reshape(shape)
    assert mask.sum() > 1000
    k, r, c = np.array(np.nonzero(mask)).mean(axis=1)
    origin = [float(v) for v in binary.headers["X-Grid-Origin"].split(",")]
    centre = [origin[0] + c * gen.MR_PIXEL_MM, origin[1] + r * gen.MR_PIXEL_MM,
              origin[2] + k * gen.MR_SLICE_MM]
    assert np.allclose(centre, phantoms.sphere_centre_mr(), atol=0.5)


# --- dose ----------------------------------------------------------------------------------
def test_dose_summary(rt: dict) -> None:
    truth = rt["truth"]
    body = get(rt["url"]("rtdose") + "/rt/dose").json()
    assert body["units"] == "GY" and body["dose_type"] == "PHYSICAL"
    assert body["summation_type"] == "PLAN"
    assert body["referenced_plan_uid"] == truth["sop_instance_uids"]["rtplan"]
    assert body["grid"]["size"] == [128, 128, 49]
    assert body["grid"]["spacing"] == pytest.approx([2.5, 2.5, 2.5])
    assert body["grid"]["frame_of_reference_uid"] == truth["frame_of_reference_uids"]["FOR_CT"]
    assert body["maximum"]["value"] == pytest.approx(66.0, rel=1e-4)
    assert np.allclose(body["maximum"]["location"], phantoms.SPHERE_CENTRE, atol=1e-6)


@pytest.mark.parametrize("role", ["rtdose", "rtdose-absolute-axial", "rtdose-relative-sagittal"])
def test_dose_at_sample_points(rt: dict, role: str) -> None:
    for sample in rt["truth"]["dose"]["samples"]:
        x, y, z = sample["point_mm"]
        body = get(rt["url"](role) + "/rt/dose/point", x=x, y=y, z=z).json()
        assert body["inside"] is True
        assert body["dose"] == pytest.approx(sample["dose_gy"], rel=0.01, abs=0.05), sample
    outside = get(rt["url"](role) + "/rt/dose/point", x=0, y=0, z=500).json()
    assert outside["dose"] is None and outside["inside"] is False


@pytest.mark.parametrize("role", ["rtdose", "rtdose-absolute-axial", "rtdose-relative-sagittal"])
def test_dvh_of_the_ptv_matches_the_closed_form(rt: dict, role: str) -> None:
    truth = rt["truth"]
    reference = truth["dose"]["dvh"]["PTV_SPHERE"]
    body = get(rt["url"](role) + "/rt/dose/dvh", structures=truth["sop_instance_uids"]["rtstruct"],
               roi=2, levels="20,55,70").json()
    metrics = body["metrics"]
    for key in ("d98_gy", "d95_gy", "d50_gy", "d2_gy", "mean_gy"):
        assert metrics[key] == pytest.approx(reference[key], rel=0.01), key
    assert metrics["max_gy"] == pytest.approx(66.0, rel=0.01)
    assert metrics["volume_cc"] == pytest.approx(truth["rois"]["PTV_SPHERE"]["volume_cm3"],
                                                 rel=0.01)
    v = {round(m["dose_gy"]): m for m in body["volume_at_dose"]}
    assert v[20]["volume_pct"] == pytest.approx(100.0)
    assert v[70]["volume_cc"] == 0
    # V55: the sphere of radius rho where D(rho) = 55 Gy, as a fraction of the sphere.
    rho = phantoms.DOSE_SIGMA_MM * np.sqrt(2 * np.log(66.0 / 55.0))
    assert v[55]["volume_pct"] == pytest.approx(100 * (rho / 25.0) ** 3, abs=1.0)
    cumulative = np.array(body["volume_cc"])
    assert np.all(np.diff(cumulative) <= 1e-9) and body["dose_gy"][0] == 0


def test_dose_values_native_and_on_the_ct_grid(rt: dict) -> None:
    truth = rt["truth"]
    native = get(rt["url"]("rtdose") + "/rt/dose/values")
    assert native.headers["content-type"] == "application/octet-stream"
    assert native.headers["X-Grid-Shape"] == "49,128,128"
    values = np.frombuffer(native.content, dtype="<f4").reshape(49, 128, 128)
    assert values[24, 64, 64] == pytest.approx(66.0, rel=1e-5)
    as_json = get(rt["url"]("rtdose") + "/rt/dose/values", accept="application/json").json()
    assert as_json["shape"] == [49, 128, 128]
    assert as_json["values"][24][64][64] == pytest.approx(66.0, rel=1e-5)

    ct_series = truth["series_instance_uids"]["ct"]
    resampled = get(rt["url"]("rtdose") + "/rt/dose/values", series=ct_series)
    shape = [int(v) for v in resampled.headers["X-Grid-Shape"].split(",")]
    assert shape == [20, 512, 512]
    dose = np.frombuffer(resampled.content, dtype="<f4").reshape(shape)
    origin = np.array([float(v) for v in resampled.headers["X-Grid-Origin"].split(",")])
    rng = np.random.default_rng(1)
    for _ in range(20):
        k, r, c = rng.integers(0, 20), rng.integers(150, 360), rng.integers(150, 360)
        p = origin + [c * gen.CT_PIXEL_MM, r * gen.CT_PIXEL_MM, k * gen.CT_SLICE_MM]
        assert dose[k, r, c] == pytest.approx(phantoms.dose_gy(p), rel=0.01, abs=0.05)
    assert np.isnan(dose[10, 5, 5])  # (-245, -245): outside the dose grid
    error(rt["url"]("rtdose") + "/rt/dose/values", 422, "registration",
          series=truth["series_instance_uids"]["mr"])


# --- registration --------------------------------------------------------------------------
def test_registration_direction_and_transform(rt: dict) -> None:
    truth = rt["truth"]
    for_ct, for_mr = (truth["frame_of_reference_uids"][k] for k in ("FOR_CT", "FOR_MR"))
    body = get(rt["url"]("reg") + "/rt/registration").json()
    assert body["registered_frame_of_reference_uid"] == for_ct
    items = {i["frame_of_reference_uid"]: i for i in body["frames_of_reference"]}
    assert items[for_ct]["identity"] is True
    mr = items[for_mr]
    assert mr["direction"] == (f"maps points from FoR {for_mr} to FoR {for_ct} "
                               "(the registration's own)")
    assert np.allclose(mr["matrix"], truth["registration"]["mr_to_ct_matrix"], atol=1e-9)
    url = rt["url"]("reg") + "/rt/registration/transform"
    to_ct = np.array(get(url, **{"from": for_mr, "to": for_ct}).json()["matrix"])
    mr_centre = np.append(truth["sphere"]["centre_mr_mm"], 1.0)
    assert np.allclose((to_ct @ mr_centre)[:3], truth["sphere"]["centre_ct_mm"], atol=1e-6)
    to_mr = np.array(get(url, **{"from": for_ct, "to": for_mr}).json()["matrix"])
    assert np.allclose(to_mr @ to_ct, np.eye(4), atol=1e-9)
    study_url = f"{rt['base']}/studies/{truth['study_instance_uid']}/rt/transform"
    assert np.allclose(get(study_url, **{"from": for_ct, "to": for_mr}).json()["matrix"], to_mr)
    error(url, 404, "to", **{"from": for_ct, "to": "1.2.3.4"})
    error(url, 400, "from", to=for_ct)


# --- plan ----------------------------------------------------------------------------------
def test_plan_beams_and_control_points(rt: dict) -> None:
    plan = rt["truth"]["plan"]
    body = get(rt["url"]("rtplan") + "/rt/plan").json()
    assert body["label"] == "PTV 60Gy" and body["prescription_dose"] == plan["prescription_gy"]
    assert body["referenced_structure_set_uid"] == rt["truth"]["sop_instance_uids"]["rtstruct"]
    assert body["fraction_groups"][0]["fractions_planned"] == plan["fractions"]
    beams = body["beams"]
    assert [b["control_points"][0]["gantry_angle"] for b in beams] == plan["gantry_angles_deg"]
    assert [b["meterset"] for b in beams] == plan["beam_metersets_mu"]
    for beam in beams:
        assert beam["radiation_type"] == "PHOTON" and beam["energy"] == 6
        assert beam["isocenter"] == plan["isocenter_mm"]
        cps = beam["control_points"]
        assert [cp["cumulative_meterset_weight"] for cp in cps] == [0, 1]
        assert cps[0]["jaw_x"] == [-30.0, 30.0] and cps[0]["collimator_angle"] == 0
        assert len(cps[0]["mlc_positions"]["MLCX"]) == 120
        assert cps[1]["gantry_angle"] == cps[0]["gantry_angle"]  # inherited
    assert beams[-1]["beam_type"] == "DYNAMIC"
    assert beams[-1]["control_points"][1]["mlc_positions"] != \
        beams[-1]["control_points"][0]["mlc_positions"]
    short = get(rt["url"]("rtplan") + "/rt/plan", control_points="false").json()
    assert "control_points" not in short["beams"][0]


# --- errors --------------------------------------------------------------------------------
def test_errors(rt: dict) -> None:
    truth = rt["truth"]
    ss = truth["sop_instance_uids"]["rtstruct"]
    dvh = rt["url"]("rtdose") + "/rt/dose/dvh"
    assert "not an RT Dose" in error(rt["url"]("ct", 0) + "/rt/dose", 404)["message"]
    error(rt["url"]("rtdose") + "/rt/rois", 404)
    error(rt["url"]("rtstruct") + "/rt/plan", 404)
    error(rt["url"]("rtstruct") + "/rt/rois/99", 404)
    error(rt["url"]("rtstruct") + "/rt/rois/abc", 400, "number")
    error(rt["url"]("rtstruct") + "/rt/rois/2/mask", 400, "series")
    error(rt["url"]("rtstruct") + "/rt/rois/2/mask", 404, "series", series="1.2.3")
    error(rt["url"]("rtstruct") + "/rt/rois/5/mask", 422,
          series=truth["series_instance_uids"]["ct"])
    error(dvh, 400, "structures", roi=2)
    error(dvh, 400, "roi", structures=ss)
    error(dvh, 400, "roi", structures=ss, roi="two")
    error(dvh, 404, "structures", structures="1.2.3.4", roi=2)
    error(dvh, 404, "roi", structures=ss, roi=42)
    error(dvh, 400, "levels", structures=ss, roi=2, levels="20,abc")
    error(dvh, 400, "bogus", structures=ss, roi=2, bogus=1)
    error(rt["url"]("rtdose") + "/rt/dose/point", 400, "z", x=1, y=2)
    error(rt["url"]("rtdose") + "/rt/dose/values", 406, accept="image/png")
    error(f"{rt['base']}/studies/1.2.3.4/rt", 404)


# --- other producers' objects --------------------------------------------------------------
def _fresh(name: str) -> Dataset:
    ds = dcmread(get_testdata_file(name), force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = factory.new_uid(), factory.new_uid()
    ds.SOPInstanceUID = factory.new_uid()
    return ds


def _url(base: str, ds: Dataset) -> str:
    return (f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")


def test_pydicom_test_files_are_served(server, rt: dict) -> None:
    struct, plan, dose = _fresh("rtstruct.dcm"), _fresh("rtplan.dcm"), _fresh("rtdose.dcm")
    for ds in (struct, plan, dose):
        response = server.stow(with_meta(ds))
        assert response.status_code in (200, 202), response.text
    rois = get(_url(server.url, struct) + "/rt/rois").json()
    assert rois["rois"] and all("volume_cc" in r for r in rois["rois"])
    get(_url(server.url, struct) + f"/rt/rois/{rois['rois'][0]['number']}")
    assert get(_url(server.url, plan) + "/rt/plan").json()["beams"]
    summary = get(_url(server.url, dose) + "/rt/dose").json()
    assert summary["grid"] is not None and summary["maximum"]["value"] > 0
    centre = summary["maximum"]["location"]
    point = get(_url(server.url, dose) + "/rt/dose/point", x=centre[0], y=centre[1],
                z=centre[2]).json()
    assert point["dose"] == pytest.approx(summary["maximum"]["value"])
    get(f"{server.url}/studies/{struct.StudyInstanceUID}/rt")


def test_malformed_structure_set_is_stored_with_warnings(server, rt: dict) -> None:
    ds = copy.deepcopy(gen.rtstruct_dataset(gen.RtStudy(seed=SEED, ct_slices=20, mr_slices=40)))
    ds.SOPInstanceUID = factory.new_uid()
    ds.SeriesInstanceUID = factory.new_uid()
    ds.ROIContourSequence[1].ReferencedROINumber = 77  # no such ROI in StructureSetROISequence
    del ds.ROIContourSequence[2].ContourSequence[0].ContourData
    response = server.stow(with_meta(ds))
    assert response.status_code in (200, 202), response.text
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
           f"{ds.SOPInstanceUID}/rt/rois")
    body = get(url).json()
    text = " ".join(body["warnings"])
    assert "ROI 77" in text and "ContourData" in text
    assert 77 in [r["number"] for r in body["rois"]]
