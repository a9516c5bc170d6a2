"""Analytic DVH test set: spheres, cylinders and cones under known dose fields.

After the published DVH test sets (Nelms et al., Med Phys 42:4435, 2015): every structure and
dose field has a closed-form geometry, so each DVH is known exactly. All objects share one
Frame of Reference (DICOM patient coordinates, mm):

* shapes, axes along z, centred on x = y = 0: a sphere of radius 20 mm centred at z = 0; a
  cylinder of radius 20 mm from z = -24 to z = +24; a cone with a 20 mm base at z = -24 and
  its apex at z = +24. Contours are circles (256 vertices) on the planes z = k·s of the
  contour spacing s ∈ {1, 2, 3} mm, on every plane where the cross-section is not empty, so
  flat faces (cylinder ends, cone base) lie on contour planes, as in the published sets;
* dose fields: linear gradients of 1 Gy/mm along x, y or z (D = 40 Gy + 1 Gy/mm · p) and a
  Gaussian peak D = 60 Gy · exp(-|p - p0|² / (2 · 12²)) centred at p0 = (2.5, -1.5, 3.5) mm;
* dose grids of 1, 2 and 3 mm, axial, whose nodes are offset from the shapes' centre by 0.3
  of a voxel (the peak falls between nodes), stored as 16-bit values × 0.002 Gy.

The exact DVH V(≥ d) is an integral along z of the area of a circle (the shape's
cross-section) cut by the iso-dose region's cross-section: a half-plane (x or y gradient),
all or nothing (z gradient) or another circle (the Gaussian: the two circles' lens). Those
areas are closed forms; the z integral and the inverse (Dx) are evaluated by adaptive
quadrature and root finding to ~1e-10, far below the 1 % that is being judged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from scipy import integrate, optimize

from conformance import generate as gen

SEED = 2015
SPACINGS_MM = (1.0, 2.0, 3.0)
GRIDS_MM = (1.0, 2.0, 3.0)
FIELDS = ("x", "y", "z", "gauss")
SHAPES = ("sphere", "cylinder", "cone")
ROI_NUMBERS = {"sphere": 1, "cylinder": 2, "cone": 3}
ROI_COLOURS = {"sphere": (255, 0, 0), "cylinder": (0, 160, 255), "cone": (255, 200, 0)}
RADIUS_MM = 20.0
HALF_LENGTH_MM = 24.0
LINEAR_BASE_GY = 40.0
LINEAR_SLOPE_GY_PER_MM = 1.0
PEAK_GY = 60.0
PEAK_SIGMA_MM = 12.0
PEAK_CENTRE_MM = (2.5, -1.5, 3.5)
GRID_HALF_EXTENT_MM = 32.0  # covers the shapes with a half-slab to spare at 3 mm spacing
GRID_NODE_OFFSET = 0.3  # nodes at centre + (i + 0.3) · h: no node on the peak or an axis
DOSE_SCALING_GY = 0.002
CIRCLE_VERTICES = 256
VOLUME_LEVELS_PCT = (98.0, 95.0, 50.0, 2.0)
METRICS = ("volume_cc", "mean_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy", "v_low_cc",
           "v_high_cc")


# --- shapes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    name: str
    z_range: tuple[float, float]

    def radius(self, z: float) -> float:
        """Radius of the circular cross-section at height z (0 outside)."""
        lo, hi = self.z_range
        if z < lo or z > hi:
            return 0.0
        if self.name == "sphere":
            return math.sqrt(max(RADIUS_MM**2 - z * z, 0.0))
        if self.name == "cylinder":
            return RADIUS_MM
        return RADIUS_MM * (hi - z) / (hi - lo)  # cone, apex at the top

    @property
    def volume_mm3(self) -> float:
        length = self.z_range[1] - self.z_range[0]
        return {"sphere": 4 / 3 * math.pi * RADIUS_MM**3,
                "cylinder": math.pi * RADIUS_MM**2 * length,
                "cone": math.pi * RADIUS_MM**2 * length / 3}[self.name]

    @property
    def centroid_z(self) -> float:
        lo, hi = self.z_range
        return lo + (hi - lo) / 4 if self.name == "cone" else (lo + hi) / 2


def shape(name: str) -> Shape:
    if name == "sphere":
        return Shape(name, (-RADIUS_MM, RADIUS_MM))
    if name in ("cylinder", "cone"):
        return Shape(name, (-HALF_LENGTH_MM, HALF_LENGTH_MM))
    raise ValueError(f"unknown shape {name!r}")


def contour_planes(s: Shape, spacing: float) -> list[float]:
    """Heights z = k·spacing where the shape's cross-section has an area."""
    lo, hi = s.z_range
    ks = range(math.ceil(lo / spacing - 1e-9), math.floor(hi / spacing + 1e-9) + 1)
    return [k * spacing + 0.0 for k in ks if s.radius(k * spacing) > 1e-6]


# --- dose fields ---------------------------------------------------------------------------
def dose_gy(field: str, points: np.ndarray) -> np.ndarray:
    """The analytic dose (Gy) at patient points (..., 3)."""
    p = np.asarray(points, dtype=np.float64)
    if field in ("x", "y", "z"):
        axis = "xyz".index(field)
        return LINEAR_BASE_GY + LINEAR_SLOPE_GY_PER_MM * p[..., axis]
    delta = p - np.array(PEAK_CENTRE_MM)
    return PEAK_GY * np.exp(-np.sum(delta**2, axis=-1) / (2 * PEAK_SIGMA_MM**2))


def _segment_area(r: float, a: float) -> float:
    """Area of the part x >= a of a disc of radius r centred at x = 0."""
    if a >= r:
        return 0.0
    if a <= -r:
        return math.pi * r * r
    return r * r * math.acos(a / r) - a * math.sqrt(r * r - a * a)


def _lens_area(d: float, r1: float, r2: float) -> float:
    """Area of the intersection of two discs of radii r1, r2 whose centres are d apart."""
    if r1 <= 0 or r2 <= 0 or d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1 * r1 * math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    a2 = r2 * r2 * math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    k = (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)
    return a1 + a2 - 0.5 * math.sqrt(max(k, 0.0))


def _quad(f: Callable[[float], float], lo: float, hi: float,
          points: tuple[float, ...] = ()) -> float:
    if hi <= lo:
        return 0.0
    inner = tuple(p for p in points if lo < p < hi)
    with warnings.catch_warnings():  # round-off notices at 1e-9: far below what is judged
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(f, lo, hi, points=inner or None, limit=400, epsabs=1e-8,
                                  epsrel=1e-9)
    return value


def volume_at_least(s: Shape, field: str, d: float) -> float:
    """Exact volume (mm³) of the shape receiving at least ``d`` Gy."""
    lo, hi = s.z_range
    kinks = (0.0,) if s.name == "sphere" else ()
    if field in ("x", "y"):  # x >= a (y alike: the shapes are symmetric about their axis)
        a = (d - LINEAR_BASE_GY) / LINEAR_SLOPE_GY_PER_MM
        return _quad(lambda z: _segment_area(s.radius(z), a), lo, hi, kinks)
    if field == "z":
        a = (d - LINEAR_BASE_GY) / LINEAR_SLOPE_GY_PER_MM
        return _quad(lambda z: math.pi * s.radius(z) ** 2, max(a, lo), hi)
    if d <= 0:
        return s.volume_mm3
    if d >= PEAK_GY:
        return 0.0
    rho = PEAK_SIGMA_MM * math.sqrt(2 * math.log(PEAK_GY / d))
    cx, cy, cz = PEAK_CENTRE_MM
    offset = math.hypot(cx, cy)

    def lens(z: float) -> float:
        ball = rho * rho - (z - cz) ** 2
        return _lens_area(offset, s.radius(z), math.sqrt(ball)) if ball > 0 else 0.0

    # The lens changes form where one circle starts to hold the other: give quad those kinks.
    zs = np.linspace(max(lo, cz - rho), min(hi, cz + rho), 401)
    kind = [_lens_kind(offset, s.radius(z), math.sqrt(max(rho * rho - (z - cz) ** 2, 0)))
            for z in zs]
    breaks = tuple(float(zs[i]) for i in range(1, zs.size) if kind[i] != kind[i - 1])
    return _quad(lens, max(lo, cz - rho), min(hi, cz + rho), kinks + breaks)


def _lens_kind(d: float, r1: float, r2: float) -> int:
    if d >= r1 + r2:
        return 0
    return 1 if d <= abs(r1 - r2) else 2


def dose_range(s: Shape, field: str) -> tuple[float, float]:
    """Minimum and maximum dose over the shape."""
    lo, hi = s.z_range
    if field in ("x", "y"):
        extent = RADIUS_MM
        return (LINEAR_BASE_GY - extent * LINEAR_SLOPE_GY_PER_MM,
                LINEAR_BASE_GY + extent * LINEAR_SLOPE_GY_PER_MM)
    if field == "z":
        return (LINEAR_BASE_GY + lo * LINEAR_SLOPE_GY_PER_MM,
                LINEAR_BASE_GY + hi * LINEAR_SLOPE_GY_PER_MM)
    # Gaussian: the peak lies inside every shape; the farthest surface point gives the minimum.
    zs = np.linspace(lo, hi, 20001)
    radii = np.array([s.radius(z) for z in zs])
    cx, cy, cz = PEAK_CENTRE_MM
    far = np.sqrt((np.hypot(cx, cy) + radii) ** 2 + (zs - cz) ** 2)
    return PEAK_GY * math.exp(-float(far.max()) ** 2 / (2 * PEAK_SIGMA_MM**2)), PEAK_GY


@cache
def truth(shape_name: str, field: str) -> dict[str, float]:
    """Exact metrics of one shape under one field (independent of grids and spacings)."""
    s = shape(shape_name)
    volume = s.volume_mm3
    d_min, d_max = dose_range(s, field)

    def dose_at_volume(pct: float) -> float:
        target = volume * pct / 100
        return float(optimize.brentq(lambda d: volume_at_least(s, field, d) - target,
                                     d_min, d_max, xtol=1e-10, rtol=1e-13))

    if field in ("x", "y"):
        mean = LINEAR_BASE_GY  # linear dose: the value at the centroid (x = y = 0)
    elif field == "z":
        mean = LINEAR_BASE_GY + LINEAR_SLOPE_GY_PER_MM * s.centroid_z
    else:  # mean = d_min + (1/V) ∫ V(>= d) dd over [d_min, d_max]
        mean = d_min + _quad(lambda d: volume_at_least(s, field, d), d_min, d_max) / volume
    low, high = dose_levels(d_min, d_max)
    out = {"volume_cc": volume / 1000, "mean_gy": mean, "min_gy": d_min, "max_gy": d_max,
           "v_low_level_gy": low, "v_high_level_gy": high,
           "v_low_cc": volume_at_least(s, field, low) / 1000,
           "v_high_cc": volume_at_least(s, field, high) / 1000}
    for pct in VOLUME_LEVELS_PCT:
        out[f"d{pct:g}_gy"] = dose_at_volume(pct)
    return out


def dose_levels(d_min: float, d_max: float) -> tuple[float, float]:
    """The two V-at-dose levels of a case: a quarter and three quarters into its dose range,
    rounded to 0.5 Gy."""
    span = d_max - d_min
    return (round((d_min + 0.25 * span) * 2) / 2, round((d_min + 0.75 * span) * 2) / 2)


# --- cases -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    shape: str
    spacing_mm: float
    grid_mm: float
    field: str

    @property
    def key(self) -> str:
        return f"{self.shape}/s{self.spacing_mm:g}/g{self.grid_mm:g}/{self.field}"


def cases() -> Iterator[Case]:
    for name in SHAPES:
        for spacing in SPACINGS_MM:
            for grid in GRIDS_MM:
                for field in FIELDS:
                    yield Case(name, spacing, grid, field)


# --- DICOM objects -----------------------------------------------------------------------
class DvhSet:
    """UIDs of the test set's study, structure sets and doses."""

    patient = gen.Patient("DVH^Analytic^Set", "DVHSET01", "19700101", "O")

    def __init__(self, seed: int = SEED) -> None:
        self.seed = seed

    def uid(self, *parts: object) -> str:
        return gen.make_uid(self.seed, "dvhset", *parts)

    @property
    def study(self) -> gen.Study:
        return gen.Study(uid=self.uid("study"), date="20240601", time="120000", study_id="DVH1",
                         accession="DVHACC01", description="Analytic DVH test set",
                         referring_physician="Nelms^Ben")

    @property
    def frame_of_reference_uid(self) -> str:
        return self.uid("for")

    def structure_set_uid(self, spacing: float) -> str:
        return self.uid("rtstruct", spacing)

    def dose_uid(self, grid: float, field: str) -> str:
        return self.uid("rtdose", grid, field)

    def series_uid(self, role: str) -> str:
        return self.uid("series", role)


def _circle_points(radius: float, z: float) -> list:
    angles = 2 * np.pi * np.arange(CIRCLE_VERTICES) / CIRCLE_VERTICES
    xs, ys = radius * np.cos(angles), radius * np.sin(angles)
    return [gen._ds(v) for p in zip(xs, ys, np.full_like(xs, z), strict=True) for v in p]


def rtstruct_dataset(dvh: DvhSet, spacing: float) -> Dataset:
    """RT Structure Set IOD (PS3.3 A.19): the three shapes contoured every ``spacing`` mm."""
    study = dvh.study
    ds = gen._new_instance(gen.RT_STRUCT_STORAGE, dvh.structure_set_uid(spacing), dvh.patient,
                           study)
    gen._set_series(ds, "RTSTRUCT", dvh.series_uid(f"rtstruct-{spacing:g}"),
                    10 + int(spacing), f"Analytic shapes, {spacing:g} mm contours", study)
    ds.OperatorsName = "Planner^Paula"
    ds.FrameOfReferenceUID = dvh.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = f"DVHSET_{spacing:g}MM"
    ds.StructureSetName = f"Analytic DVH shapes, {spacing:g} mm"
    ds.StructureSetDate, ds.StructureSetTime = study.date, study.time
    # No images: RT Referenced Study Sequence is Type 3 (PS3.3 C.8.8.5).
    ds.ReferencedFrameOfReferenceSequence = [
        gen._item(FrameOfReferenceUID=dvh.frame_of_reference_uid)]
    ds.StructureSetROISequence = [
        gen._item(ROINumber=ROI_NUMBERS[name],
                  ReferencedFrameOfReferenceUID=dvh.frame_of_reference_uid,
                  ROIName=name.upper(), ROIGenerationAlgorithm="MANUAL")
        for name in SHAPES]
    contours = []
    for name in SHAPES:
        s = shape(name)
        items = [gen._item(ContourNumber=i + 1, ContourGeometricType="CLOSED_PLANAR",
                           NumberOfContourPoints=CIRCLE_VERTICES,
                           ContourData=_circle_points(s.radius(z), z))
                 for i, z in enumerate(contour_planes(s, spacing))]
        contours.append(gen._item(ReferencedROINumber=ROI_NUMBERS[name],
                                  ROIDisplayColor=list(ROI_COLOURS[name]),
                                  ContourSequence=items))
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = [
        gen._item(ObservationNumber=ROI_NUMBERS[name], ReferencedROINumber=ROI_NUMBERS[name],
                  ROIObservationLabel=name.upper(), RTROIInterpretedType="ORGAN",
                  ROIInterpreter="")
        for name in SHAPES]
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def grid_axis(grid: float) -> np.ndarray:
    """Node coordinates (mm) along each axis of the ``grid`` mm dose grid."""
    n = int(round(2 * GRID_HALF_EXTENT_MM / grid)) + 1
    return (np.arange(n) - (n - 1) / 2 + GRID_NODE_OFFSET) * grid


def rtdose_dataset(dvh: DvhSet, grid: float, field: str) -> Dataset:
    """RT Dose IOD (PS3.3 A.18): ``field`` sampled on an axial ``grid`` mm grid."""
    study = dvh.study
    ds = gen._new_instance(gen.RT_DOSE_STORAGE, dvh.dose_uid(grid, field), dvh.patient, study)
    gen._set_series(ds, "RTDOSE", dvh.series_uid(f"rtdose-{grid:g}-{field}"),
                    20 + 4 * int(grid) + FIELDS.index(field),
                    f"Analytic dose {field}, {grid:g} mm grid", study)
    ds.OperatorsName = "Planner^Paula"
    ds.FrameOfReferenceUID = dvh.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    gen._set_content_time(ds, study)
    axis = grid_axis(grid)
    gen._set_image_plane(ds, [axis[0], axis[0], axis[0]], gen.AXIAL, grid, grid)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    values = dose_gy(field, np.stack([x, y, z], axis=-1))
    gen._set_mono_pixels(ds, np.rint(values / DOSE_SCALING_GY).astype(np.uint16))
    ds.NumberOfFrames = axis.size
    ds.FrameIncrementPointer = "GridFrameOffsetVector"
    ds.GridFrameOffsetVector = [gen._ds(v) for v in axis - axis[0]]
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseComment = (f"analytic field {field}" if field != "gauss"
                      else "analytic Gaussian peak")
    ds.DoseGridScaling = DOSE_SCALING_GY
    ds.TissueHeterogeneityCorrection = "IMAGE"
    # Type 1C for a PLAN dose (PS3.3 C.8.8.3); the plan itself is not part of the set.
    ds.ReferencedRTPlanSequence = [gen._image_ref(gen.RT_PLAN_STORAGE, dvh.uid("rtplan"))]
    return ds


def files(dvh: DvhSet) -> Iterator[tuple[str, Callable[[], Dataset]]]:
    """(file name, builder) of every object of the set."""
    for spacing in SPACINGS_MM:
        yield f"RTSTRUCT_{spacing:g}mm.dcm", lambda s=spacing: rtstruct_dataset(dvh, s)
    for grid in GRIDS_MM:
        for field in FIELDS:
            yield (f"RTDOSE_{grid:g}mm_{field}.dcm",
                   lambda g=grid, f=field: rtdose_dataset(dvh, g, f))


def ground_truth(dvh: DvhSet) -> dict:
    return {
        "study_instance_uid": dvh.study.uid,
        "frame_of_reference_uid": dvh.frame_of_reference_uid,
        "roi_numbers": ROI_NUMBERS,
        "structure_sets": {f"{s:g}": dvh.structure_set_uid(s) for s in SPACINGS_MM},
        "structure_set_series": {f"{s:g}": dvh.series_uid(f"rtstruct-{s:g}")
                                 for s in SPACINGS_MM},
        "doses": {f"{g:g}/{f}": dvh.dose_uid(g, f) for g in GRIDS_MM for f in FIELDS},
        "dose_series": {f"{g:g}/{f}": dvh.series_uid(f"rtdose-{g:g}-{f}")
                        for g in GRIDS_MM for f in FIELDS},
        "truth": {f"{name}/{field}": truth(name, field) for name in SHAPES for field in FIELDS},
        "metrics": list(METRICS),
        "method": __doc__.split("\n\n")[0],
    }


def write_set(out_dir: str | Path, seed: int = SEED) -> dict:
    """Write the structure sets and doses under ``out_dir`` with ``truth.json``."""
    out = Path(out_dir)
    dvh = DvhSet(seed)
    for name, build in files(dvh):
        gen.write(build(), out / name)
    data = ground_truth(dvh)
    gen._write_json(out / "truth.json", data)
    return data
