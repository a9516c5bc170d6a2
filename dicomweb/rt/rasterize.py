"""Rasterisation of an ROI on a voxel grid under the slab model of :mod:`.planes`."""

from __future__ import annotations

import numpy as np

from .grid import Grid
from .planes import ContourPlane, PlanarStack, planar_stack
from .polygons import lattice_mask, points_in_polygons
from .structures import Roi


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
