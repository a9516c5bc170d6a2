"""Tests of the synthetic data generator and its analytic ground truth."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conformance import generate, phantoms

CT_SLICES = 20  # 60 mm of CT: covers the whole PTV sphere (radius 25 mm)
MR_SLICES = 20
SMALL_STUDIES = 12


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("generated")
    generate.main(
        [
            str(path),
            "--ct-slices",
            str(CT_SLICES),
            "--mr-slices",
            str(MR_SLICES),
            "--small-studies",
            str(SMALL_STUDIES),
            "--hard-cases",
            "--dvh-set",
        ]
    )
    return path


@pytest.fixture(scope="module")
def truth(out_dir: Path) -> dict:
    return json.loads((out_dir / "ground_truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rtstruct(out_dir: Path) -> pydicom.Dataset:
    return pydicom.dcmread(out_dir / "rt" / "RTSTRUCT.dcm")


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def _dose_in_gy(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(float) * float(ds.DoseGridScaling)


def _dose_points(ds: pydicom.Dataset) -> np.ndarray:
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    absolute = offsets[0] != 0
    return generate.dose_grid_points(
        [float(v) for v in ds.ImagePositionPatient],
        [float(v) for v in ds.ImageOrientationPatient],
        offsets,
        ds.Rows,
        ds.Columns,
        float(ds.PixelSpacing[0]),
        absolute,
    )


# --- files -----------------------------------------------------------------------------
def test_every_file_is_readable_part10(out_dir: Path) -> None:
    files = sorted(out_dir.rglob("*.dcm"))
    assert len(files) > CT_SLICES + MR_SLICES + 4
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        if "PixelData" in ds:
            assert ds.pixel_array.size > 0


def test_uids_are_deterministic() -> None:
    first, second = generate.RtStudy(seed=3), generate.RtStudy(seed=3)
    assert first.study.uid == second.study.uid
    assert first.instance_uid("ct", 5) == second.instance_uid("ct", 5)
    assert generate.RtStudy(seed=4).study.uid != first.study.uid
    assert pydicom.uid.UID(first.study.uid).is_valid


def test_small_studies_are_deterministic(tmp_path: Path, out_dir: Path, truth: dict) -> None:
    again = generate.generate_small_studies(tmp_path, SMALL_STUDIES, seed=0)
    assert again == truth["small_studies"]


# --- dciodvfy --------------------------------------------------------------------------
def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    if "Assertion `bitsallocated <= bytesinword*8u' failed" in output:
        # dicom3tools 1.00~20220618 aborts on 32-bit OW Pixel Data; handled by the caller
        return ["ASSERTION_32BIT"]
    return [line for line in output.splitlines() if line.startswith("Error")]


def _sample_files(out_dir: Path) -> dict[str, Path]:
    rt = out_dir / "rt"
    files = {
        "CT": rt / "CT" / "CT0001.dcm",
        "MR": rt / "MR" / "MR0001.dcm",
        "RTSTRUCT": rt / "RTSTRUCT.dcm",
        "RTPLAN": rt / "RTPLAN.dcm",
        "RTDOSE": rt / "RTDOSE.dcm",
        "REG": rt / "REG.dcm",
    }
    for path in sorted((rt / "hard_cases").glob("*.dcm")):
        files[path.stem] = path
    for name in ("RTSTRUCT_3mm", "RTDOSE_1mm_gauss", "RTDOSE_3mm_z"):  # the DVH test set
        files[f"dvh-{name}"] = out_dir / "dvh" / f"{name}.dcm"
    for path in sorted((out_dir / "small").rglob("*.dcm")):
        modality = pydicom.dcmread(path, stop_before_pixels=True).Modality
        files.setdefault(f"small-{modality}", path)
    return files


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not on PATH"
)
def test_dciodvfy_reports_no_errors(out_dir: Path, tmp_path: Path) -> None:
    failures = {}
    for kind, path in _sample_files(out_dir).items():
        errors = _dciodvfy_errors(path)
        if errors == ["ASSERTION_32BIT"]:
            # same dataset with 16-bit dose pixels, which dciodvfy can parse
            ds = pydicom.dcmread(path)
            offsets = "absolute" if float(ds.GridFrameOffsetVector[0]) != 0 else "relative"
            orientation = "axial" if float(ds.ImageOrientationPatient[0]) == 1 else "sagittal"
            rt = generate.RtStudy(ct_slices=CT_SLICES, mr_slices=MR_SLICES)
            ds16 = generate.rtdose_dataset(rt, offsets=offsets, orientation=orientation, bits=16)
            errors = _dciodvfy_errors(generate.write(ds16, tmp_path / f"{kind}16.dcm"))
        if errors:
            failures[kind] = errors
    assert not failures


# --- registration ----------------------------------------------------------------------
def test_mr_sphere_centre_maps_to_ct_sphere_centre(truth: dict) -> None:
    matrix = np.array(truth["registration"]["mr_to_ct_matrix"])
    centre_mr = np.array(truth["sphere"]["centre_mr_mm"] + [1.0])
    np.testing.assert_allclose((matrix @ centre_mr)[:3], truth["sphere"]["centre_ct_mm"], atol=1e-9)


def test_reg_matrices_follow_c20_2_1_1(out_dir: Path, truth: dict) -> None:
    reg = _read(out_dir / "rt" / "REG.dcm")
    fors = truth["frame_of_reference_uids"]
    assert reg.FrameOfReferenceUID == fors["FOR_CT"]
    by_for = {
        item.FrameOfReferenceUID: np.array(
            item.MatrixRegistrationSequence[0]
            .MatrixSequence[0]
            .FrameOfReferenceTransformationMatrix,
            dtype=float,
        ).reshape(4, 4)
        for item in reg.RegistrationSequence
    }
    np.testing.assert_allclose(by_for[fors["FOR_CT"]], np.eye(4))
    np.testing.assert_allclose(
        by_for[fors["FOR_MR"]], truth["registration"]["mr_to_ct_matrix"], atol=1e-5
    )


def _voxel_centroid(files: list[Path], value: int) -> np.ndarray:
    points = []
    for path in files:
        ds = _read(path)
        rows, cols = np.nonzero(
            ds.pixel_array.astype(int) * float(ds.get("RescaleSlope", 1))
            + float(ds.get("RescaleIntercept", 0))
            == value
        )
        origin = np.array(ds.ImagePositionPatient, dtype=float)
        spacing = float(ds.PixelSpacing[0])
        xyz = origin + np.stack([cols * spacing, rows * spacing, np.zeros_like(rows)], axis=1)
        points.append(xyz)
    return np.concatenate(points).mean(axis=0)


def test_sphere_in_images_matches_ground_truth(out_dir: Path, truth: dict) -> None:
    ct = _voxel_centroid(sorted((out_dir / "rt" / "CT").glob("*.dcm")), phantoms.HU_SPHERE)
    np.testing.assert_allclose(ct, truth["sphere"]["centre_ct_mm"], atol=0.5)
    mr = _voxel_centroid(sorted((out_dir / "rt" / "MR").glob("*.dcm")), phantoms.MR_SPHERE)
    matrix = np.array(truth["registration"]["mr_to_ct_matrix"])
    np.testing.assert_allclose(
        phantoms.apply_matrix(matrix, mr), truth["sphere"]["centre_ct_mm"], atol=0.5
    )


# --- structures ------------------------------------------------------------------------
def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _inside(point: np.ndarray, polygon: np.ndarray) -> bool:
    x, y = point[:2]
    xs, ys = polygon[:, 0], polygon[:, 1]
    crossings = ((ys > y) != (np.roll(ys, -1) > y)) & (
        x < (np.roll(xs, -1) - xs) * (y - ys) / (np.roll(ys, -1) - ys + 1e-300) + xs
    )
    return bool(np.count_nonzero(crossings) % 2)


def _contour_volume_and_centroid(roi_contours, thickness: float) -> tuple[float, np.ndarray]:
    """Even-odd rule: a contour nested inside an odd number of others is a hole."""
    by_z: dict[float, list[np.ndarray]] = {}
    for contour in roi_contours:
        points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
        by_z.setdefault(round(points[0, 2], 3), []).append(points)
    volume, moment = 0.0, np.zeros(3)
    for polygons in by_z.values():
        for polygon in polygons:
            depth = sum(_inside(polygon[0], other) for other in polygons if other is not polygon)
            area = _polygon_area(polygon) * (-1 if depth % 2 else 1) * thickness
            centroid = polygon.mean(axis=0)  # vertices are evenly spread on each shape
            volume += area
            moment += area * centroid
    return volume, moment / volume


def test_roi_volumes_from_contours_match_analytic(rtstruct: pydicom.Dataset, truth: dict) -> None:
    names = {item.ROINumber: item.ROIName for item in rtstruct.StructureSetROISequence}
    checked = set()
    for roi in rtstruct.ROIContourSequence:
        name = names[roi.ReferencedROINumber]
        if name not in truth["rois"]:
            continue
        expected = truth["rois"][name]
        assert expected["volume_within_ct_extent_cm3"] == pytest.approx(expected["volume_cm3"])
        volume, centroid = _contour_volume_and_centroid(roi.ContourSequence, generate.CT_SLICE_MM)
        assert volume / 1000 == pytest.approx(expected["volume_cm3"], rel=0.01), name
        np.testing.assert_allclose(centroid, expected["centroid_mm"], atol=0.5, err_msg=name)
        checked.add(name)
    assert checked == {"BODY", "PTV_SPHERE", "ORGAN_BOX", "RING_HOLLOW_CYLINDER"}
    sphere = truth["rois"]["PTV_SPHERE"]["volume_cm3"]
    assert sphere == pytest.approx(4 / 3 * math.pi * phantoms.SPHERE_RADIUS**3 / 1000)


def test_contours_reference_ct_slices(
    out_dir: Path, rtstruct: pydicom.Dataset, truth: dict
) -> None:
    ct_z = {}
    for path in (out_dir / "rt" / "CT").glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ct_z[ds.SOPInstanceUID] = float(ds.ImagePositionPatient[2])
    for roi in rtstruct.ROIContourSequence:
        for contour in roi.ContourSequence:
            ref = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            assert ct_z[ref] == pytest.approx(float(contour.ContourData[2]))
            if contour.ContourGeometricType == "CLOSED_PLANAR":
                assert contour.NumberOfContourPoints >= 64
    frame_ref = rtstruct.ReferencedFrameOfReferenceSequence[0]
    assert frame_ref.FrameOfReferenceUID == truth["frame_of_reference_uids"]["FOR_CT"]
    series = frame_ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(ct_z)


def test_point_roi(rtstruct: pydicom.Dataset, truth: dict) -> None:
    number = truth["roi_numbers"]["POINT_MARKER"]
    roi = next(r for r in rtstruct.ROIContourSequence if r.ReferencedROINumber == number)
    (contour,) = roi.ContourSequence
    assert contour.ContourGeometricType == "POINT"
    assert [float(v) for v in contour.ContourData] == truth["point_marker_mm"]


# --- plan and dose -----------------------------------------------------------------------
def test_plan_structure(out_dir: Path, truth: dict) -> None:
    plan = _read(out_dir / "rt" / "RTPLAN.dcm")
    assert (
        plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
        == (truth["sop_instance_uids"]["rtstruct"])
    )
    assert len(plan.BeamSequence) == len(truth["plan"]["gantry_angles_deg"])
    group = plan.FractionGroupSequence[0]
    assert [float(b.BeamMeterset) for b in group.ReferencedBeamSequence] == (
        truth["plan"]["beam_metersets_mu"]
    )
    for beam in plan.BeamSequence:
        mlc = beam.BeamLimitingDeviceSequence[2]
        assert mlc.RTBeamLimitingDeviceType == "MLCX"
        assert len(mlc.LeafPositionBoundaries) == mlc.NumberOfLeafJawPairs + 1
        first = beam.ControlPointSequence[0]
        assert len(beam.ControlPointSequence) >= 2
        positions = first.BeamLimitingDevicePositionSequence[2].LeafJawPositions
        assert len(positions) == 2 * mlc.NumberOfLeafJawPairs
        assert [float(v) for v in first.IsocenterPosition] == truth["plan"]["isocenter_mm"]


@pytest.mark.parametrize(
    "name",
    [
        "RTDOSE.dcm",
        "hard_cases/RTDOSE_absolute_axial.dcm",
        "hard_cases/RTDOSE_relative_sagittal.dcm",
    ],
)
def test_dose_grid_matches_formula(out_dir: Path, truth: dict, name: str) -> None:
    ds = _read(out_dir / "rt" / name)
    assert (
        ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
        == (truth["sop_instance_uids"]["rtplan"])
    )
    dose = _dose_in_gy(ds)
    expected = phantoms.dose_gy(_dose_points(ds))
    np.testing.assert_allclose(dose, expected, atol=float(ds.DoseGridScaling))
    assert dose.max() == pytest.approx(truth["dose"]["dmax_gy"], abs=1e-4)


def test_dose_samples_and_dvh_reference(truth: dict) -> None:
    dose = truth["dose"]
    for sample in dose["samples"]:
        p = np.array(sample["point_mm"]) - dose["centre_mm"]
        analytic = dose["dmax_gy"] * math.exp(-p @ p / (2 * dose["sigma_mm"] ** 2))
        assert sample["dose_gy"] == pytest.approx(analytic)
    # dense 0.25 mm integration over the sphere, independent of the dose grid
    step, radius = 0.25, phantoms.SPHERE_RADIUS
    axis = np.arange(-radius + step / 2, radius, step)
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    inside = np.sort(dose["dmax_gy"] * np.exp(-r2[r2 <= radius**2] / (2 * dose["sigma_mm"] ** 2)))
    reference = dose["dvh"]["PTV_SPHERE"]
    assert inside.mean() == pytest.approx(reference["mean_gy"], rel=1e-3)
    for x in (2, 50, 95, 98):
        assert np.percentile(inside, 100 - x) == pytest.approx(reference[f"d{x}_gy"], rel=2e-3)
    box = dose["dvh"]["ORGAN_BOX"]
    lo = np.array(phantoms.BOX_CENTRE) - np.array(phantoms.BOX_SIZE) / 2
    grids = [lo[i] + (np.arange(int(phantoms.BOX_SIZE[i])) + 0.5) for i in range(3)]
    points = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1)
    assert phantoms.dose_gy(points).mean() == pytest.approx(box["mean_gy"], rel=1e-3)


def test_absolute_offsets_rejected_for_sagittal() -> None:
    with pytest.raises(ValueError):
        generate.rtdose_dataset(generate.RtStudy(), offsets="absolute", orientation="sagittal")


# --- small studies -------------------------------------------------------------------------
def test_small_studies_summary_matches_files(out_dir: Path, truth: dict) -> None:
    summaries = truth["small_studies"]
    assert len(summaries) == SMALL_STUDIES
    charsets = {s["specific_character_set"] for s in summaries}
    assert charsets == {"ISO_IR 192", "ISO_IR 100"}
    for index, summary in enumerate(summaries):
        files = sorted((out_dir / "small" / f"study{index:04d}").rglob("*.dcm"))
        assert len(files) == summary["instance_count"]
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        assert {ds.StudyInstanceUID for ds in datasets} == {summary["study_instance_uid"]}
        assert {ds.Modality for ds in datasets} == set(summary["modalities"])
        assert str(datasets[0].PatientName) == summary["patient_name"]
        assert datasets[0].SpecificCharacterSet == summary["specific_character_set"]


def test_latin1_names_are_encoded_as_latin1(out_dir: Path, truth: dict) -> None:
    index, summary = next(
        (i, s)
        for i, s in enumerate(truth["small_studies"])
        if s["specific_character_set"] == "ISO_IR 100" and not s["patient_name"].isascii()
    )
    path = next((out_dir / "small" / f"study{index:04d}").rglob("*.dcm"))
    assert summary["patient_name"].encode("latin-1") in path.read_bytes()
