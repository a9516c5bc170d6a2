"""RT Structure Set parsing and geometry against pydicom test data and analytic shapes."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb.rt import Grid, NotAnRtObject
from dicomweb.rt.planes import planar_stack
from dicomweb.rt.rasterize import points_in_roi, rasterize_roi, rasterize_roi_fraction
from dicomweb.rt.roi_measures import roi_bounds, roi_centroid, roi_volume_cc
from dicomweb.rt.structures import Contour, ContourGeometricType, Roi, parse_structure_set

CP = ContourGeometricType.CLOSED_PLANAR


# ---------------------------------------------------------------- builders (also used by DVH)
def circle(center: np.ndarray, radius: float, u: np.ndarray, v: np.ndarray,
           n: int = 180) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return center + radius * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)


def sphere_contours(radius: float, spacing: float, center=(0.0, 0.0, 0.0), phase: float = 0.0,
                    normal=(0.0, 0.0, 1.0), n: int = 180) -> list[np.ndarray]:
    """Contours of a sphere on planes at (k + phase) * spacing along ``normal``."""
    c = np.asarray(center, dtype=float)
    nn = np.asarray(normal, dtype=float) / np.linalg.norm(normal)
    u = np.cross(nn, [0.0, 0.0, 1.0] if abs(nn[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(nn, u)
    out = []
    k0 = math.floor(-radius / spacing - phase)
    for k in range(k0, k0 + int(2 * radius / spacing) + 3):
        z = (k + phase) * spacing
        if abs(z) >= radius:
            continue
        out.append(circle(c + z * nn, math.sqrt(radius**2 - z**2), u, v, n))
    return out


def box_contours(lo, hi, spacing: float) -> list[np.ndarray]:
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    return [np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)
            for z in np.arange(z0 + spacing / 2, z1, spacing)]


def make_roi(polys: list[np.ndarray], number: int = 1, name: str = "roi") -> Roi:
    return Roi(number, name, contours=[Contour(CP, p) for p in polys])


def rtstruct_dataset(rois: dict[int, list[np.ndarray]], *, names: dict[int, str] | None = None,
                     point_rois: dict[int, tuple[float, float, float]] | None = None
                     ) -> Dataset:
    """A minimal RTSTRUCT built in code."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = "1.2.3.4.100"
    ds.SeriesInstanceUID = "1.2.3.4.101"
    ds.Modality = "RTSTRUCT"
    ds.StructureSetLabel = "Test"
    ds.StructureSetName = "Analytic"
    ds.StructureSetDate = "20240102"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5.6"
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = "1.2.3.4.5"
    study.RTReferencedSeriesSequence = Sequence([series])
    ref = Dataset()
    ref.FrameOfReferenceUID = "1.2.3.4.9"
    ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    names = names or {}
    ss_rois, contours, obs = [], [], []
    all_rois = {**{k: ("C", v) for k, v in rois.items()},
                **{k: ("P", v) for k, v in (point_rois or {}).items()}}
    for number, (kind, data) in all_rois.items():
        item = Dataset()
        item.ROINumber = number
        item.ROIName = names.get(number, f"ROI{number}")
        item.ReferencedFrameOfReferenceUID = "1.2.3.4.9"
        item.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, number % 256]
        seq = []
        polys = data if kind == "C" else [np.array([data], float)]
        for i, p in enumerate(polys):
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR" if kind == "C" else "POINT"
            c.NumberOfContourPoints = len(p)
            c.ContourData = [f"{v:.6f}" for v in np.asarray(p).ravel()]
            img = Dataset()
            img.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            img.ReferencedSOPInstanceUID = f"1.2.3.4.5.6.{i}"
            c.ContourImageSequence = Sequence([img])
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        contours.append(rc)
        o = Dataset()
        o.ObservationNumber = number
        o.ReferencedROINumber = number
        o.RTROIInterpretedType = "PTV" if kind == "C" else "MARKER"
        o.ROIInterpreter = ""
        obs.append(o)
    ds.StructureSetROISequence = Sequence(ss_rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(obs)
    return ds


# ---------------------------------------------------------------- pydicom test data
def test_pydicom_rtstruct_parses() -> None:
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    ss = parse_structure_set(ds)
    assert ss.label == "sep30" and ss.date == "20091223"
    assert ss.sop_instance_uid == ds.SOPInstanceUID
    assert ss.frame_of_reference_uids == [ds.ReferencedFrameOfReferenceSequence[0]
                                          .FrameOfReferenceUID]
    assert [r.number for r in ss.rois] == [1, 2, 3]
    body = ss.roi(1)
    assert body.name == "patient" and body.interpreted_type == "EXTERNAL"
    assert body.display_color == (220, 160, 120)
    assert len(body.contours) == 3
    for roi in ss.rois:  # geometry never crashes
        roi_volume_cc(roi)
        roi_centroid(roi)
    iso = ss.roi(2)
    assert iso.interpreted_type == "ISOCENTER" and iso.is_point
    assert roi_volume_cc(iso) == 0.0
    np.testing.assert_allclose(roi_centroid(iso), [0, 0, 0])


def test_not_a_structure_set() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"
    with pytest.raises(NotAnRtObject):
        parse_structure_set(ds)


def test_built_dataset_round_trip() -> None:
    ds = rtstruct_dataset({1: sphere_contours(20, 2.5)}, names={1: "PTV"},
                          point_rois={7: (1.0, 2.0, 3.0)})
    ss = parse_structure_set(ds)
    assert ss.warnings == []
    assert ss.referenced_series_uids == ["1.2.3.4.5.6"]
    assert ss.referenced_study_uids == ["1.2.3.4.5"]
    ptv = ss.roi_by_name("ptv")
    assert ptv.interpreted_type == "PTV" and ptv.display_color == (255, 0, 1)
    assert ptv.contours[0].referenced_sop_instance_uids == ("1.2.3.4.5.6.0",)
    assert ptv.contours[0].points.shape == (180, 3)
    marker = ss.roi(7)
    assert marker.contours[0].geometric_type is ContourGeometricType.POINT
    np.testing.assert_allclose(roi_centroid(marker), [1, 2, 3])
    assert roi_volume_cc(marker) == 0.0


def test_missing_optional_sequences_give_warnings() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ss = parse_structure_set(ds)
    assert ss.rois == [] and ss.warnings
    ds = rtstruct_dataset({1: box_contours((0, 0, 0), (10, 10, 10), 2)})
    del ds.RTROIObservationsSequence
    del ds.ReferencedFrameOfReferenceSequence
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = ["1", "2"]
    del ds.ROIContourSequence[0].ContourSequence[1].ContourGeometricType
    ds.ROIContourSequence[0].ROIDisplayColor = [300, 0, 0]
    ss = parse_structure_set(ds)
    assert len(ss.roi(1).contours) == 3
    text = " ".join(ss.warnings)
    for needle in ("RTROIObservationsSequence", "ReferencedFrameOfReferenceSequence",
                   "ContourGeometricType", "ROIDisplayColor"):
        assert needle in text


# ---------------------------------------------------------------- analytic volumes
@pytest.mark.parametrize("radius", [20.0, 25.0, 40.0])
@pytest.mark.parametrize("spacing", [2.0, 2.5, 3.0])
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5])
def test_sphere_volume_and_centroid(radius: float, spacing: float, phase: float) -> None:
    center = (12.0, -30.0, 47.0)
    roi = make_roi(sphere_contours(radius, spacing, center, phase, n=360))
    exact = 4 / 3 * math.pi * radius**3 / 1000
    assert roi_volume_cc(roi, endcap="half") == pytest.approx(exact, rel=0.01)
    # The default end cap closes the poles along the planes' area parabola: a sphere's own.
    assert roi_volume_cc(roi) == pytest.approx(exact, rel=1e-3)
    np.testing.assert_allclose(roi_centroid(roi), center, atol=0.5)
    lo, hi = roi_bounds(roi)
    assert np.all(hi - lo <= 2 * radius + 1e-6)


def test_box_volume_exact() -> None:
    roi = make_roi(box_contours((-30, -20, -15), (30, 20, 15), 3.0))  # planes mid-slab
    assert roi_volume_cc(roi, endcap="half") == pytest.approx(72.0, rel=1e-12)
    # Flat ends: "auto" and "none" stop at the end planes, half a spacing short each side.
    assert roi_volume_cc(roi) == roi_volume_cc(roi, endcap="none") == pytest.approx(64.8)
    np.testing.assert_allclose(roi_centroid(roi), [0, 0, 0], atol=1e-9)


def test_hollow_cylinder_even_odd() -> None:
    polys = []
    for z in np.arange(0.5, 60, 1.0):
        c = np.array([5.0, 5.0, z])
        polys.append(circle(c, 30, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 720))
        polys.append(circle(c, 10, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 720))
    roi = make_roi(polys)
    exact = math.pi * (30**2 - 10**2) * 60 / 1000
    assert roi_volume_cc(roi, endcap="half") == pytest.approx(exact, rel=2e-3)
    np.testing.assert_allclose(roi_centroid(roi), [5, 5, 30], atol=1e-6)
    inside = points_in_roi(roi, np.array([[5, 5, 30], [25, 5, 30], [5, 5, 70]]))
    assert inside.tolist() == [False, True, False]


def test_islands_and_hole_with_island() -> None:
    ex, ey = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    polys = []
    for z in (0.0, 2.0, 4.0):
        # two disjoint islands + a ring with an island in its hole (depth 2 -> island again)
        polys.append(circle(np.array([-50, 0, z]), 10, ex, ey, 720))
        polys.append(circle(np.array([50, 0, z]), 20, ex, ey, 720))
        polys.append(circle(np.array([50, 0, z]), 10, ex, ey, 720))
        polys.append(circle(np.array([50, 0, z]), 5, ex, ey, 720))
    roi = make_roi(polys)
    area = math.pi * (10**2 + 20**2 - 10**2 + 5**2)
    assert roi_volume_cc(roi, endcap="half") == pytest.approx(area * 2 * 3 / 1000, rel=1e-3)
    assert planar_stack(roi).planes[0].signs.count(-1) == 1


def test_non_axial_stack_matches_axial() -> None:
    normal = np.array([1.0, 2.0, 2.0]) / 3.0
    roi = make_roi(sphere_contours(25, 2.5, (5, 6, 7), 0.3, normal=normal, n=360))
    stack = planar_stack(roi)
    assert abs(abs(stack.normal @ normal) - 1) < 1e-9
    assert stack.spacing == pytest.approx(2.5, abs=1e-6)
    assert roi_volume_cc(roi) == pytest.approx(4 / 3 * math.pi * 25**3 / 1000, rel=0.01)
    np.testing.assert_allclose(roi_centroid(roi), [5, 6, 7], atol=0.5)


def test_single_plane_volume() -> None:
    roi = make_roi(box_contours((0, 0, 0), (10, 10, 2), 2.0))
    assert roi_volume_cc(roi) == 0.0
    assert roi_volume_cc(roi, slice_thickness=2.0) == pytest.approx(0.2)


def test_contour_validation() -> None:
    with pytest.raises(ValueError):
        Contour(CP, np.zeros((2, 3)))
    with pytest.raises(ValueError):
        Contour(ContourGeometricType.POINT, np.zeros((2, 3)))
    with pytest.raises(ValueError):
        Roi(1, display_color=(0, 0, 400))


# ---------------------------------------------------------------- rasterisation
def test_rasterize_box_exact_on_aligned_grid() -> None:
    roi = make_roi(box_contours((-10, -10, -10), (10, 10, 10), 2.0))
    grid = Grid.regular((-19, -19, -19), (2, 2, 2), (20, 20, 20))
    mask = rasterize_roi(roi, grid)
    assert mask.sum() * 8 / 1000 == pytest.approx(8.0)


def test_rasterize_sphere_volume_and_supersampling() -> None:
    roi = make_roi(sphere_contours(20, 2.0, (0.3, -0.7, 0.0), 0.5, n=360))
    grid = Grid.regular((-30, -30, -30), (2.5, 2.5, 2.5), (25, 25, 25))
    vol = roi_volume_cc(roi)
    coarse = rasterize_roi(roi, grid).sum() * grid.voxel_volume_mm3 / 1000
    frac = rasterize_roi_fraction(roi, grid, supersample=4).sum() * grid.voxel_volume_mm3 / 1000
    assert coarse == pytest.approx(vol, rel=0.05)
    assert frac == pytest.approx(vol, rel=0.01)
    assert rasterize_roi(roi, grid, supersample=3).dtype == bool


def test_rasterize_oblique_grid_uses_point_path() -> None:
    roi = make_roi(sphere_contours(20, 2.0, (0, 0, 0), 0.5, n=360))
    a = math.radians(30)
    rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    grid = Grid.regular(rot @ np.array([-30.0, -30, -30]), (1.5, 1.5, 1.5), (41, 41, 41), rot)
    vol = rasterize_roi(roi, grid).sum() * grid.voxel_volume_mm3 / 1000
    assert vol == pytest.approx(roi_volume_cc(roi), rel=0.02)


def test_rasterize_sagittal_grid_and_contours() -> None:
    normal = np.array([1.0, 0, 0])
    roi = make_roi(sphere_contours(15, 2.0, (0, 0, 0), 0.5, normal=normal, n=360))
    # Sagittal image grid: rows along -z, columns along y, slices along x.
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)
    grid = Grid.regular((-20, -20, 20), (1, 1, 2), (41, 41, 21), direction)
    assert abs(abs(grid.normal @ normal) - 1) < 1e-12
    vol = rasterize_roi(roi, grid).sum() * grid.voxel_volume_mm3 / 1000
    assert vol == pytest.approx(roi_volume_cc(roi), rel=0.02)
