"""Closed planar contours of an ROI grouped per plane (PS3.3 C.8.8.6.3).

C.8.8.6.3: a CLOSED_PLANAR contour is "a closed polygon in a single plane".
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

from dataclasses import dataclass

import numpy as np

from .polygons import in_plane_basis, newell_normal, points_in_polygons, polygon_area_centroid
from .structures import Roi

PLANE_TOLERANCE_MM = 0.05  # contours closer than this along the normal share a plane
PLANARITY_TOLERANCE_MM = 0.5  # larger out-of-plane deviations trigger a warning


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


def planar_stack(roi: Roi) -> PlanarStack | None:
    """Group the closed contours of ``roi`` per plane (cached on the ROI); None if none."""
    if roi._stack is not None:
        return roi._stack
    closed = roi.closed_contours
    if not closed:
        return None
    warnings: list[str] = []
    normals = [newell_normal(c.points) for c in closed]
    ref = normals[int(np.argmax([np.linalg.norm(n) for n in normals]))]
    if np.linalg.norm(ref) < 1e-9:
        return None
    ref = ref / np.linalg.norm(ref)
    total = sum((n if n @ ref >= 0 else -n) for n in normals)
    normal = total / np.linalg.norm(total)
    # Orient the normal to the nearest positive patient axis for stable offsets.
    if normal[int(np.argmax(np.abs(normal)))] < 0:
        normal = -normal
    u, v = in_plane_basis(normal)
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
