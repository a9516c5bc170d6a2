"""RT Structure Set parsing and contour geometry (PS3.3 A.19, C.8.8.5 - C.8.8.8).

Parsing
    :func:`parse_structure_set` reads the Structure Set module (C.8.8.5), the ROI Contour
    module (C.8.8.6) and the RT ROI Observations module (C.8.8.8) of an already-read pydicom
    dataset. Missing or malformed optional data never raise: problems are collected in
    ``StructureSet.warnings``.

Geometry of CLOSED_PLANAR contours (C.8.8.6.3: "a closed polygon in a single plane")
    * Contours of one ROI are grouped per plane. The plane normal is computed from the
      points (Newell's method), so sagittal, coronal or oblique stacks work like axial ones.
    * Several contours on one plane combine with the **even-odd rule**: a contour inside an
      odd number of other contours is a hole, inside an even number an island (PS3.3
      C.8.8.6 notes that inner contours define holes). Contours are assumed not to cross.
    * Each plane represents a **slab of ±half the plane spacing** around it (what treatment
      planning systems do); the plane spacing is the *median* spacing of consecutive planes,
      so a missing plane in a stack does not inflate the slab thickness.
    * A single-plane ROI has zero volume unless a ``slice_thickness`` (e.g. the referenced
      image Slice Thickness) is passed, in which case the slab has that thickness.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d
from .errors import InvalidGeometry, RtError
from .grid import Grid

PLANE_TOLERANCE_MM = 0.05  # contours closer than this along the normal share a plane
PLANARITY_TOLERANCE_MM = 0.5  # larger out-of-plane deviations trigger a warning


class ContourGeometricType(str, enum.Enum):
    """Contour Geometric Type (3006,0042), PS3.3 C.8.8.6.1."""

    POINT = "POINT"
    OPEN_PLANAR = "OPEN_PLANAR"
    OPEN_NONPLANAR = "OPEN_NONPLANAR"
    CLOSED_PLANAR = "CLOSED_PLANAR"
    CLOSEDPLANAR_XOR = "CLOSEDPLANAR_XOR"  # 2021+ alternative; combined with even-odd too


@dataclass(frozen=True, eq=False)
class Contour:
    """One item of the Contour Sequence (3006,0040), points in patient mm (C.8.8.6)."""

    geometric_type: ContourGeometricType
    points: np.ndarray  # (N, 3) float64
    referenced_sop_instance_uids: tuple[str, ...] = ()
    number: int | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
            raise InvalidGeometry(f"contour points must be (N, 3) with N >= 1, got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise InvalidGeometry("contour points must be finite")
        if self.geometric_type is ContourGeometricType.POINT and pts.shape[0] != 1:
            raise InvalidGeometry("a POINT contour has exactly one point")
        if self.is_closed and pts.shape[0] < 3:
            raise InvalidGeometry("a closed contour needs at least 3 points")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "referenced_sop_instance_uids",
                           tuple(self.referenced_sop_instance_uids))

    @property
    def is_closed(self) -> bool:
        return self.geometric_type in (ContourGeometricType.CLOSED_PLANAR,
                                       ContourGeometricType.CLOSEDPLANAR_XOR)


@dataclass(eq=False)
class Roi:
    """A Structure Set ROI (3006,0020) with its contours (3006,0039) and observation (3006,0080)."""

    number: int
    name: str | None = None
    interpreted_type: str | None = None  # RT ROI Interpreted Type (3006,00A4): PTV, ORGAN, ...
    display_color: tuple[int, int, int] | None = None
    referenced_frame_of_reference_uid: str | None = None
    generation_algorithm: str | None = None
    observation_label: str | None = None
    contours: list[Contour] = field(default_factory=list)
    _stack: PlanarStack | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.display_color is not None:
            color = tuple(int(c) for c in self.display_color)
            if len(color) != 3 or any(c < 0 or c > 255 for c in color):
                raise InvalidGeometry(f"display colour must be 3 values 0..255: {color}")
            self.display_color = color  # type: ignore[assignment]

    @property
    def closed_contours(self) -> list[Contour]:
        return [c for c in self.contours if c.is_closed]

    @property
    def is_point(self) -> bool:
        return bool(self.contours) and all(
            c.geometric_type is ContourGeometricType.POINT for c in self.contours)

    @property
    def number_of_points(self) -> int:
        return int(sum(c.points.shape[0] for c in self.contours))


@dataclass(eq=False)
class StructureSet:
    """An RT Structure Set instance (PS3.3 C.8.8.5)."""

    sop_instance_uid: str | None
    label: str | None
    name: str | None = None
    date: str | None = None
    time: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uids: list[str] = field(default_factory=list)
    referenced_study_uids: list[str] = field(default_factory=list)
    referenced_series_uids: list[str] = field(default_factory=list)
    rois: list[Roi] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def roi(self, number: int) -> Roi | None:
        return next((r for r in self.rois if r.number == number), None)

    def roi_by_name(self, name: str) -> Roi | None:
        key = name.strip().lower()
        return next((r for r in self.rois if (r.name or "").strip().lower() == key), None)


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
def parse_structure_set(ds: Dataset) -> StructureSet:
    """Parse an RTSTRUCT dataset; raises :class:`NotAnRtObject` for other objects only."""
    d.check_kind(ds, [d.RTSTRUCT_SOP_CLASS], ["RTSTRUCT"], "an RT Structure Set")
    w: list[str] = []
    ss = StructureSet(
        sop_instance_uid=d.text(ds, "SOPInstanceUID", w),
        label=d.text(ds, "StructureSetLabel", w),
        name=d.text(ds, "StructureSetName"),
        date=d.text(ds, "StructureSetDate"),
        time=d.text(ds, "StructureSetTime"),
        series_instance_uid=d.text(ds, "SeriesInstanceUID"),
        warnings=w,
    )
    _parse_referenced_frames(ds, ss)
    rois: dict[int, Roi] = {}
    for i, item in enumerate(d.sequence(ds, "StructureSetROISequence", w)):
        ctx = f"StructureSetROISequence[{i}]: "
        number = d.integer(item, "ROINumber", w, ctx)
        if number is None:
            continue
        if number in rois:
            w.append(f"{ctx}duplicate ROINumber {number}")
            continue
        rois[number] = Roi(
            number=number,
            name=d.text(item, "ROIName", w, ctx),
            referenced_frame_of_reference_uid=d.text(item, "ReferencedFrameOfReferenceUID", w, ctx),
            generation_algorithm=d.text(item, "ROIGenerationAlgorithm"),
        )
    _parse_roi_contours(ds, rois, w)
    _parse_observations(ds, rois, w)
    ss.rois = sorted(rois.values(), key=lambda r: r.number)
    return ss


def _parse_referenced_frames(ds: Dataset, ss: StructureSet) -> None:
    # C.8.8.5: Referenced Frame of Reference Sequence > RT Referenced Study Sequence >
    # RT Referenced Series Sequence > Contour Image Sequence.
    for i, ref in enumerate(d.sequence(ds, "ReferencedFrameOfReferenceSequence", ss.warnings)):
        ctx = f"ReferencedFrameOfReferenceSequence[{i}]: "
        for_uid = d.text(ref, "FrameOfReferenceUID", ss.warnings, ctx)
        if for_uid and for_uid not in ss.frame_of_reference_uids:
            ss.frame_of_reference_uids.append(for_uid)
        for study in d.sequence(ref, "RTReferencedStudySequence"):
            study_uid = d.text(study, "ReferencedSOPInstanceUID")
            if study_uid and study_uid not in ss.referenced_study_uids:
                ss.referenced_study_uids.append(study_uid)
            for series in d.sequence(study, "RTReferencedSeriesSequence"):
                uid = d.text(series, "SeriesInstanceUID")
                if uid and uid not in ss.referenced_series_uids:
                    ss.referenced_series_uids.append(uid)


def _parse_roi_contours(ds: Dataset, rois: dict[int, Roi], w: list[str]) -> None:
    for i, item in enumerate(d.sequence(ds, "ROIContourSequence", w)):
        ctx = f"ROIContourSequence[{i}]: "
        number = d.integer(item, "ReferencedROINumber", w, ctx)
        if number is None:
            continue
        roi = rois.get(number)
        if roi is None:
            w.append(f"{ctx}references ROI {number} absent from StructureSetROISequence")
            roi = rois[number] = Roi(number=number)
        color = d.numbers(item, "ROIDisplayColor")
        if color is not None and color.size == 3 and np.all((color >= 0) & (color <= 255)):
            roi.display_color = (int(color[0]), int(color[1]), int(color[2]))
        elif color is not None:
            w.append(f"{ctx}invalid ROIDisplayColor")
        for j, citem in enumerate(d.sequence(item, "ContourSequence")):
            contour = _parse_contour(citem, w, f"ROI {number} contour {j}: ")
            if contour is not None:
                roi.contours.append(contour)


def _parse_contour(item: Dataset, w: list[str], ctx: str) -> Contour | None:
    gtype_text = d.text(item, "ContourGeometricType", w, ctx)
    try:
        gtype = ContourGeometricType(gtype_text)
    except ValueError:
        w.append(f"{ctx}unknown ContourGeometricType {gtype_text!r}, skipped")
        return None
    data = d.numbers(item, "ContourData", w, ctx)
    if data is None:
        return None
    if data.size % 3:
        w.append(f"{ctx}ContourData has {data.size} values, not a multiple of 3; truncated")
        data = data[: data.size - data.size % 3]
    declared = d.integer(item, "NumberOfContourPoints")
    if declared is not None and declared * 3 != data.size:
        w.append(f"{ctx}NumberOfContourPoints {declared} != {data.size // 3} points in ContourData")
    refs = d.uids(d.sequence(item, "ContourImageSequence"))
    try:
        return Contour(gtype, data.reshape(-1, 3), tuple(refs), d.integer(item, "ContourNumber"))
    except RtError as exc:
        w.append(f"{ctx}{exc}; skipped")
        return None


def _parse_observations(ds: Dataset, rois: dict[int, Roi], w: list[str]) -> None:
    for i, item in enumerate(d.sequence(ds, "RTROIObservationsSequence", w)):
        ctx = f"RTROIObservationsSequence[{i}]: "
        number = d.integer(item, "ReferencedROINumber", w, ctx)
        if number is None:
            continue
        roi = rois.get(number)
        if roi is None:
            w.append(f"{ctx}references unknown ROI {number}")
            continue
        roi.interpreted_type = d.text(item, "RTROIInterpretedType") or roi.interpreted_type
        roi.observation_label = d.text(item, "ROIObservationLabel") or roi.observation_label


# ----------------------------------------------------------------------------------------
# Planar geometry
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ContourPlane:
    """All closed contours of one ROI lying in one plane, in in-plane (u, v) mm coordinates."""

    offset: float  # position along the stack normal, mm
    polygons: tuple[np.ndarray, ...]  # each (M, 2)
    area_mm2: float  # even-odd area
    centroid: np.ndarray  # (3,) patient mm
    signs: tuple[int, ...]  # +1 for islands, -1 for holes


@dataclass(frozen=True, eq=False)
class PlanarStack:
    """The closed contours of an ROI grouped per plane along a common normal."""

    normal: np.ndarray
    u: np.ndarray
    v: np.ndarray
    planes: tuple[ContourPlane, ...]  # sorted by offset
    spacing: float  # median spacing between consecutive planes (0 if single plane)
    warnings: tuple[str, ...] = ()

    @property
    def offsets(self) -> np.ndarray:
        return np.array([p.offset for p in self.planes])

    def thickness(self, slice_thickness: float | None = None) -> float:
        """Slab thickness: the plane spacing, or ``slice_thickness`` for a single plane."""
        if len(self.planes) > 1:
            return self.spacing
        return float(slice_thickness or 0.0)

    def to_plane(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient points (N,3) -> ((N,2) in-plane coordinates, (N,) offsets along normal)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        return np.stack([xyz @ self.u, xyz @ self.v], axis=1), xyz @ self.normal

    def plane_index(self, along: np.ndarray, thickness: float) -> np.ndarray:
        """Index of the plane whose slab [offset - t/2, offset + t/2) holds each offset, or -1."""
        offs = self.offsets
        along = np.asarray(along, dtype=np.float64)
        if offs.size == 0 or thickness <= 0:
            return np.full(along.shape, -1, dtype=np.intp)
        pos = np.searchsorted(offs, along)
        lo = np.clip(pos - 1, 0, offs.size - 1)
        hi = np.clip(pos, 0, offs.size - 1)
        # Ties go to the upper plane: slabs are half-open [offset - t/2, offset + t/2).
        nearest = np.where(np.abs(along - offs[lo]) < np.abs(offs[hi] - along), lo, hi)
        delta = along - offs[nearest]
        half = thickness / 2.0
        ok = (delta >= -half - 1e-9) & (delta < half - 1e-9)
        return np.where(ok, nearest, -1)


def _newell_normal(pts: np.ndarray) -> np.ndarray:
    """Area-weighted normal of a closed polygon (Newell's method); length = 2 * area."""
    nxt = np.roll(pts, -1, axis=0)
    return np.array([
        np.sum((pts[:, 1] - nxt[:, 1]) * (pts[:, 2] + nxt[:, 2])),
        np.sum((pts[:, 2] - nxt[:, 2]) * (pts[:, 0] + nxt[:, 0])),
        np.sum((pts[:, 0] - nxt[:, 0]) * (pts[:, 1] + nxt[:, 1])),
    ])


def _in_plane_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Use patient x as the first in-plane axis when possible so axial stacks keep (x, y).
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = ref - (ref @ n) * n
    u /= np.linalg.norm(u)
    return u, np.cross(n, u)


def polygon_area_centroid(poly: np.ndarray) -> tuple[float, np.ndarray]:
    """Signed area (shoelace) and centroid of a 2-D polygon (M, 2)."""
    x, y = poly[:, 0], poly[:, 1]
    # Shift to the first vertex to limit cancellation for coordinates far from the origin.
    x0, y0 = x[0], y[0]
    x, y = x - x0, y - y0
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = 0.5 * float(np.sum(cross))
    if abs(area) < 1e-12:
        return 0.0, np.array([x0 + x.mean(), y0 + y.mean()])
    cx = float(np.sum((x + xn) * cross)) / (6.0 * area)
    cy = float(np.sum((y + yn) * cross)) / (6.0 * area)
    return area, np.array([cx + x0, cy + y0])


def points_in_polygons(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                       pts: np.ndarray) -> np.ndarray:
    """Even-odd rule: True where a ray from the point crosses an odd number of edges.

    Vectorised over points and edges (chunked to bound memory).
    """
    pts = np.asarray(pts, dtype=np.float64)
    inside = np.zeros(pts.shape[0], dtype=bool)
    if not polygons or pts.shape[0] == 0:
        return inside
    a = np.concatenate([p for p in polygons])
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    keep = a[:, 1] != b[:, 1]  # horizontal edges never cross a horizontal ray
    a, b = a[keep], b[keep]
    chunk = max(1, 4_000_000 // max(1, a.shape[0]))
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        px, py = p[:, 0:1], p[:, 1:2]
        straddle = (a[None, :, 1] > py) != (b[None, :, 1] > py)
        t = (py - a[None, :, 1]) / (b[None, :, 1] - a[None, :, 1])
        xcross = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
        crossings = np.count_nonzero(straddle & (xcross > px), axis=1)
        inside[s:s + chunk] = (crossings % 2) == 1
    return inside


def points_in_polygons_banded(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                              pts: np.ndarray, band: float) -> np.ndarray:
    """:func:`points_in_polygons` for many points: each point is tested only against the
    edges crossing its horizontal band of height ``band`` (a few, not all of them)."""
    pts = np.asarray(pts, dtype=np.float64)
    inside = np.zeros(pts.shape[0], dtype=bool)
    if not polygons or pts.shape[0] == 0 or band <= 0:
        return inside
    a = np.concatenate(list(polygons))
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    keep = a[:, 1] != b[:, 1]
    a, b = a[keep], b[keep]
    y0 = float(pts[:, 1].min())
    bands = int((float(pts[:, 1].max()) - y0) // band) + 1
    first = np.floor((np.minimum(a[:, 1], b[:, 1]) - y0) / band)
    last = np.floor((np.maximum(a[:, 1], b[:, 1]) - y0) / band)
    useful = (last >= 0) & (first < bands)
    a, b = a[useful], b[useful]
    first = np.clip(first[useful], 0, bands - 1).astype(np.intp)
    last = np.clip(last[useful], 0, bands - 1).astype(np.intp)
    if a.shape[0] == 0:
        return inside
    counts = last - first + 1
    edge = np.repeat(np.arange(a.shape[0]), counts)
    offset = np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    where = first[edge] + offset
    order = np.argsort(where, kind="stable")
    edge, where = edge[order], where[order]
    per_band = np.bincount(where, minlength=bands)
    width = int(per_band.max())
    table = np.full((bands, width), -1, dtype=np.intp)
    slot = np.arange(edge.size) - np.repeat(np.cumsum(per_band) - per_band, per_band)
    table[where, slot] = edge
    point_band = np.clip(((pts[:, 1] - y0) // band).astype(np.intp), 0, bands - 1)
    chunk = max(1, 4_000_000 // width)
    for start in range(0, pts.shape[0], chunk):
        p = pts[start:start + chunk]
        idx = table[point_band[start:start + chunk]]
        valid = idx >= 0
        ea, eb = a[idx], b[idx]
        py, px = p[:, 1:2], p[:, 0:1]
        straddle = valid & ((ea[..., 1] > py) != (eb[..., 1] > py))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (py - ea[..., 1]) / (eb[..., 1] - ea[..., 1])
        xcross = ea[..., 0] + t * (eb[..., 0] - ea[..., 0])
        inside[start:start + chunk] = np.count_nonzero(straddle & (xcross > px), axis=1) % 2 == 1
    return inside


def lattice_mask(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                 nrows: int, ncols: int) -> np.ndarray:
    """Even-odd scanline fill of polygons given in continuous (column, row) lattice units.

    Returns a (nrows, ncols) bool mask of the lattice points (c, r), c, r integers, lying
    inside. Vectorised: every edge is expanded to the rows it crosses, each crossing toggles
    the parity of all columns to its right (prefix sum of a difference array).
    """
    mask = np.zeros((nrows, ncols), dtype=bool)
    if not polygons:
        return mask
    a = np.concatenate(list(polygons))
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    ylo, yhi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    # Same half-open rule as points_in_polygons: row r crosses the edge iff ylo <= r < yhi.
    r0 = np.maximum(np.ceil(ylo), 0).astype(np.int64)
    r1 = np.minimum(np.ceil(yhi) - 1, nrows - 1).astype(np.int64)
    counts = np.maximum(r1 - r0 + 1, 0)
    valid = (counts > 0) & (a[:, 1] != b[:, 1])
    if not np.any(valid):
        return mask
    a, b, r0, counts = a[valid], b[valid], r0[valid], counts[valid]
    edge = np.repeat(np.arange(a.shape[0]), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    rows = r0[edge] + (np.arange(edge.size) - start)
    ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x = ax + (rows - ay) * (bx - ax) / (by - ay)
    # Points with c < x see this crossing to their right -> toggle columns [0, ceil(x)).
    first_right = np.clip(np.ceil(x), 0, ncols).astype(np.int64)
    diff = np.zeros((nrows, ncols + 1), dtype=np.int32)
    np.add.at(diff, (rows, np.zeros_like(rows)), 1)
    np.add.at(diff, (rows, first_right), -1)
    parity = np.cumsum(diff[:, :ncols], axis=1) & 1
    return parity.astype(bool)


def planar_stack(roi: Roi) -> PlanarStack | None:
    """Group the closed contours of ``roi`` per plane (cached on the ROI); None if none."""
    if roi._stack is not None:
        return roi._stack
    closed = roi.closed_contours
    if not closed:
        return None
    warnings: list[str] = []
    normals = [_newell_normal(c.points) for c in closed]
    ref = normals[int(np.argmax([np.linalg.norm(n) for n in normals]))]
    if np.linalg.norm(ref) < 1e-9:
        return None
    ref = ref / np.linalg.norm(ref)
    total = sum((n if n @ ref >= 0 else -n) for n in normals)
    normal = total / np.linalg.norm(total)
    # Orient the normal to the nearest positive patient axis for stable offsets.
    if normal[int(np.argmax(np.abs(normal)))] < 0:
        normal = -normal
    u, v = _in_plane_basis(normal)
    entries = []
    for i, c in enumerate(closed):
        along = c.points @ normal
        off = float(np.mean(along))
        if np.max(np.abs(along - off)) > PLANARITY_TOLERANCE_MM:
            warnings.append(f"ROI {roi.number} contour {i} deviates "
                            f"{np.max(np.abs(along - off)):.2f} mm from its plane")
        entries.append((off, np.stack([c.points @ u, c.points @ v], axis=1)))
    entries.sort(key=lambda e: e[0])
    groups: list[list[tuple[float, np.ndarray]]] = []
    for e in entries:
        if groups and e[0] - groups[-1][-1][0] <= PLANE_TOLERANCE_MM:
            groups[-1].append(e)
        else:
            groups.append([e])
    planes = tuple(_make_plane(g, normal, u, v) for g in groups)
    offsets = np.array([p.offset for p in planes])
    spacing = float(np.median(np.diff(offsets))) if offsets.size > 1 else 0.0
    if offsets.size > 2 and spacing > 0:
        gaps = np.diff(offsets)
        if np.any(np.abs(gaps - spacing) > 0.1 * spacing):
            warnings.append(f"ROI {roi.number}: irregular plane spacing "
                            f"({gaps.min():.2f}..{gaps.max():.2f} mm, median {spacing:.2f} mm)")
    stack = PlanarStack(normal, u, v, planes, spacing, tuple(warnings))
    roi._stack = stack
    return stack


def _make_plane(group: list[tuple[float, np.ndarray]], n: np.ndarray, u: np.ndarray,
                v: np.ndarray) -> ContourPlane:
    offset = float(np.mean([g[0] for g in group]))
    polys = [g[1] for g in group]
    areas, cents, signs = [], [], []
    for i, p in enumerate(polys):
        area, cen = polygon_area_centroid(p)
        others = [q for j, q in enumerate(polys) if j != i]
        # Depth = number of other contours containing this one (first vertex as witness).
        depth = sum(bool(points_in_polygons([q], p[:1])[0]) for q in others)
        sign = -1 if depth % 2 else 1
        areas.append(abs(area))
        cents.append(cen)
        signs.append(sign)
    areas_a = np.array(areas)
    signs_a = np.array(signs, dtype=np.float64)
    total = float(np.sum(areas_a * signs_a))
    if abs(total) > 1e-12:
        c2 = (np.array(cents) * (areas_a * signs_a)[:, None]).sum(axis=0) / total
    else:
        c2 = np.mean(np.concatenate(polys), axis=0)
    centroid = c2[0] * u + c2[1] * v + offset * n
    return ContourPlane(offset, tuple(polys), max(total, 0.0), centroid, tuple(signs))


# ----------------------------------------------------------------------------------------
# ROI measures
# ----------------------------------------------------------------------------------------
def roi_volume_cc(roi: Roi, slice_thickness: float | None = None,
                  endcap: str = "auto") -> float:
    """Volume (cm³) of the CLOSED_PLANAR contours under the slab model of :mod:`.slabs`
    (the DVH's: scaled slabs between planes, ``endcap`` beyond the end planes).

    ``slice_thickness`` is only used for a single-plane ROI (otherwise volume 0).
    POINT and OPEN ROIs have volume 0.
    """
    from .slabs import pieces_volume_mm3, slab_pieces  # slabs builds on this module

    stack = planar_stack(roi)
    if stack is None:
        return 0.0
    t = stack.thickness(slice_thickness)
    if t <= 0:
        return 0.0
    return pieces_volume_mm3(slab_pieces(stack, t, endcap)) / 1000.0


def roi_centroid(roi: Roi) -> np.ndarray | None:
    """Volume centroid (mm) of closed contours; mean of the points for POINT/OPEN ROIs."""
    stack = planar_stack(roi)
    if stack is not None:
        areas = np.array([p.area_mm2 for p in stack.planes])
        if areas.sum() > 0:
            cents = np.array([p.centroid for p in stack.planes])
            return (cents * areas[:, None]).sum(axis=0) / areas.sum()
    if not roi.contours:
        return None
    return np.concatenate([c.points for c in roi.contours]).mean(axis=0)


def roi_bounds(roi: Roi) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned (min xyz, max xyz) of the contour points (the drawn extent, not the slabs)."""
    if not roi.contours:
        return None
    pts = np.concatenate([c.points for c in roi.contours])
    return pts.min(axis=0), pts.max(axis=0)


def roi_slab_bounds(roi: Roi, slice_thickness: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned bounds including the ±half-thickness slabs of the end planes."""
    stack = planar_stack(roi)
    b = roi_bounds(roi)
    if stack is None or b is None:
        return b
    half = stack.thickness(slice_thickness) / 2.0 * np.abs(stack.normal)
    return b[0] - half, b[1] + half


# ----------------------------------------------------------------------------------------
# Rasterisation
# ----------------------------------------------------------------------------------------
def points_in_roi(roi: Roi, xyz: np.ndarray, slice_thickness: float | None = None) -> np.ndarray:
    """For patient points (N,3): inside the slab model of the ROI (nearest plane, even-odd)."""
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    out = np.zeros(xyz.shape[0], dtype=bool)
    stack = planar_stack(roi)
    if stack is None:
        return out
    t = stack.thickness(slice_thickness)
    uv, along = stack.to_plane(xyz)
    pidx = stack.plane_index(along, t)
    for i in np.unique(pidx[pidx >= 0]):
        sel = np.nonzero(pidx == i)[0]
        out[sel] = points_in_polygons(stack.planes[i].polygons, uv[sel])
    return out


def rasterize_roi(roi: Roi, grid: Grid, *, supersample: int = 1,
                  slice_thickness: float | None = None) -> np.ndarray:
    """Boolean mask (slices, rows, columns) of the ROI on ``grid``.

    Each grid voxel centre takes the contours of the nearest contour plane within half the
    plane spacing (even-odd rule on that plane). With ``supersample`` = s > 1 every voxel is
    sampled at s³ sub-voxel points and marked inside when at least half of them are.
    """
    if supersample > 1:
        return rasterize_roi_fraction(roi, grid, supersample=supersample,
                                      slice_thickness=slice_thickness) >= 0.5
    mask = np.zeros(grid.shape, dtype=bool)
    stack = planar_stack(roi)
    if stack is None:
        return mask
    t = stack.thickness(slice_thickness)
    parallel = abs(float(grid.normal @ stack.normal)) > 1 - 1e-6
    if not parallel:
        pts = grid.voxel_centres().reshape(-1, 3)
        return points_in_roi(roi, pts, slice_thickness).reshape(grid.shape)
    # Fast path: slices parallel to contour planes -> 2-D scanline fill per slice.
    slice_centres = grid.origin[None, :] + grid.slice_offsets[:, None] * grid.normal[None, :]
    pidx = stack.plane_index(slice_centres @ stack.normal, t)
    cache: dict[int, np.ndarray] = {}
    for k, pi in enumerate(pidx):
        if pi < 0:
            continue
        if pi not in cache:
            cache[pi] = lattice_mask(_plane_to_lattice(stack, stack.planes[pi], grid),
                                     grid.rows, grid.columns)
        mask[k] = cache[pi]
    return mask


def _plane_to_lattice(stack: PlanarStack, plane: ContourPlane, grid: Grid) -> list[np.ndarray]:
    """Polygons of a plane in the grid's continuous (column, row) index coordinates."""
    out = []
    for poly in plane.polygons:
        xyz = (poly[:, 0:1] * stack.u + poly[:, 1:2] * stack.v) + plane.offset * stack.normal
        rel = xyz - grid.origin
        out.append(np.stack([rel @ grid.row_direction / grid.column_spacing,
                             rel @ grid.column_direction / grid.row_spacing], axis=1))
    return out


def supersampled_grid(grid: Grid, s: int) -> Grid:
    """Grid whose voxels subdivide each voxel of ``grid`` into s × s × s sub-voxels."""
    offs = grid.slice_offsets
    step = np.gradient(offs) if offs.size > 1 else np.array([grid.column_spacing])
    sub = (np.arange(s) - (s - 1) / 2.0) / s
    new_offs = (offs[:, None] + step[:, None] * sub[None, :]).reshape(-1)
    origin = (grid.origin + sub[0] * grid.column_spacing * grid.row_direction
              + sub[0] * grid.row_spacing * grid.column_direction)
    return Grid(origin, grid.row_direction, grid.column_direction, grid.row_spacing / s,
                grid.column_spacing / s, new_offs, grid.rows * s, grid.columns * s)


def rasterize_roi_fraction(roi: Roi, grid: Grid, *, supersample: int = 4,
                           slice_thickness: float | None = None) -> np.ndarray:
    """Fraction (0..1, float32) of each voxel inside the ROI, from s³ sub-samples."""
    s = int(supersample)
    if s < 1:
        raise ValueError("supersample must be >= 1")
    fine = rasterize_roi(roi, supersampled_grid(grid, s), slice_thickness=slice_thickness)
    ns, nr, nc = grid.shape
    return fine.reshape(ns, s, nr, s, nc, s).mean(axis=(1, 3, 5), dtype=np.float32)
