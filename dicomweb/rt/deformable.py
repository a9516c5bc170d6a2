"""Deformable Spatial Registration applied (PS3.3 C.20.3).

PS3.3 C.20.3.1.1: the registration is applied to Registered RCS coordinates: first the Pre
Deformation Matrix, then the deformation offset at the point (the Deformable Registration
Grid, laid out in the Registered RCS by its Image Position / Orientation (Patient), Grid
Dimensions and Grid Resolution), finally the Post Deformation Matrix; "the resulting
coordinate addresses the sample point within the Source RCS"::

    p_source = M_post · (M_pre · p_registered + D(p_registered))

so resampling a source object (a dose, an image) onto a registered grid is direct. The
other way (a source point into the registered frame) inverts that by fixed-point iteration,
p ← M_pre⁻¹ · (M_post⁻¹ · p_source − D(p)), which converges for any displacement field whose
gradient stays below 1 (a field that folds space has no inverse). D is interpolated
trilinearly between grid points (Vector Grid Data: float32 (dx, dy, dz) triplets, x fastest);
outside the grid it is undefined and so is the mapping: NaN (null in JSON), never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d
from .dose import sample_trilinear
from .errors import RtError
from .grid import Grid

INVERSE_TOLERANCE_MM = 1e-6
INVERSE_ITERATIONS = 100


@dataclass(frozen=True, eq=False)
class DeformationGrid:
    origin: np.ndarray  # (3,) first grid point, registered RCS
    axes: np.ndarray  # (3, 3): rows are the grid's x, y, z unit directions
    resolution: np.ndarray  # (3,) mm
    vectors: np.ndarray  # (nz, ny, nx, 3) displacements, mm

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """D at registered-RCS points (N, 3); NaN rows outside the grid."""
        from scipy import ndimage  # imported here: scipy costs every process 0.25 s
        ijk = ((points - self.origin) @ self.axes.T) / self.resolution  # x, y, z indices
        shape = np.array(self.vectors.shape[2::-1], dtype=np.float64)  # nx, ny, nz
        tol = 1e-9
        inside = np.all((ijk >= -tol) & (ijk <= shape - 1 + tol), axis=1)
        coords = np.clip(ijk[:, ::-1].T, 0, (shape[::-1] - 1)[:, None])  # z, y, x
        out = np.stack([ndimage.map_coordinates(self.vectors[..., c], coords, order=1,
                                                mode="nearest") for c in range(3)], axis=1)
        out[~inside] = np.nan
        return out


@dataclass(frozen=True, eq=False)
class Deformation:
    """One Deformable Registration Sequence item with its grid."""

    source_for_uid: str | None
    registered_for_uid: str | None
    pre: np.ndarray
    post: np.ndarray
    grid: DeformationGrid

    def to_source(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        q = p @ self.pre[:3, :3].T + self.pre[:3, 3] + self.grid.displacement(p)
        return q @ self.post[:3, :3].T + self.post[:3, 3]

    def to_registered(self, points: np.ndarray) -> np.ndarray:
        s = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        post_inv, pre_inv = np.linalg.inv(self.post), np.linalg.inv(self.pre)
        target = s @ post_inv[:3, :3].T + post_inv[:3, 3]  # = pre·p + D(p)
        p = target @ pre_inv[:3, :3].T + pre_inv[:3, 3]
        # Iterate only the points not yet converged: near the grid's edge a few points may
        # flip between inside and outside and never settle; the rest must not pay for them
        # (a 512×512 image plane: 23 s of CPU when every point ran every iteration).
        active = np.arange(len(p))
        converged = np.zeros(len(p), dtype=bool)
        for _ in range(INVERSE_ITERATIONS):
            if active.size == 0:
                break
            q = p[active]
            shift = np.nan_to_num(self.grid.displacement(q), nan=0.0)
            nxt = (target[active] - shift) @ pre_inv[:3, :3].T + pre_inv[:3, 3]
            settled = np.linalg.norm(nxt - q, axis=1) < INVERSE_TOLERANCE_MM
            p[active] = nxt
            converged[active[settled]] = True
            active = active[~settled]
        # Points whose solution lies outside the grid, or that did not converge: undefined.
        p[~converged | np.isnan(self.grid.displacement(p)).any(axis=1)] = np.nan
        return p

    def mapper(self, from_for: str | None, to_for: str | None
               ) -> Callable[[np.ndarray], np.ndarray] | None:
        """A function mapping points of ``from_for`` into ``to_for`` (one of the two ways)."""
        if (from_for, to_for) == (self.registered_for_uid, self.source_for_uid):
            return self.to_source
        if (from_for, to_for) == (self.source_for_uid, self.registered_for_uid):
            return self.to_registered
        return None


def _matrix(item: Dataset, keyword: str) -> np.ndarray:
    seq = d.sequence(item, keyword)
    if not seq:
        return np.eye(4)
    values = d.numbers(seq[0], "FrameOfReferenceTransformationMatrix", count=16)
    if values is None:
        raise RtError(f"{keyword} has no usable Frame of Reference Transformation Matrix")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def _grid(g: Dataset) -> DeformationGrid:
    origin = d.numbers(g, "ImagePositionPatient", count=3)
    orientation = d.numbers(g, "ImageOrientationPatient", count=6)
    dims = d.numbers(g, "GridDimensions", count=3)
    resolution = d.numbers(g, "GridResolution", count=3)
    raw = g.get("VectorGridData")
    if origin is None or orientation is None or dims is None or resolution is None or raw is None:
        raise RtError("the Deformable Registration Grid lacks its position, orientation, "
                      "dimensions, resolution or vector data")
    nx, ny, nz = (int(v) for v in dims)
    vectors = np.frombuffer(raw.value if hasattr(raw, "value") else raw, dtype="<f4")
    if vectors.size != nx * ny * nz * 3:
        raise RtError(f"Vector Grid Data holds {vectors.size} values, not 3 × {nx}×{ny}×{nz}")
    x, y = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    axes = np.stack([x, y, np.cross(x, y)])
    return DeformationGrid(np.asarray(origin, dtype=np.float64), axes,
                           np.asarray(resolution, dtype=np.float64),
                           vectors.astype(np.float64).reshape(nz, ny, nx, 3))


def deformations(ds: Dataset) -> list[Deformation]:
    """Every Deformable Registration Sequence item that has a grid."""
    registered = d.text(ds, "FrameOfReferenceUID")
    out = []
    for item in d.sequence(ds, "DeformableRegistrationSequence"):
        grids = d.sequence(item, "DeformableRegistrationGridSequence")
        if not grids:
            continue
        out.append(Deformation(d.text(item, "SourceFrameOfReferenceUID"), registered,
                               _matrix(item, "PreDeformationMatrixRegistrationSequence"),
                               _matrix(item, "PostDeformationMatrixRegistrationSequence"),
                               _grid(grids[0])))
    return out


def resample_through(source: Grid, values: np.ndarray, target: Grid,
                     mapper: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``values`` on ``source`` resampled (trilinear) at the voxels of ``target``, each voxel
    mapped into the source's frame by ``mapper``; NaN where the mapping or the source has no
    value."""
    ns, nr, nc = target.shape
    out = np.full(target.shape, np.nan, dtype=np.float32)
    r, c = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
    in_plane = (np.outer(c.ravel() * target.column_spacing, target.row_direction)
                + np.outer(r.ravel() * target.row_spacing, target.column_direction))
    for k in range(ns):
        mapped = mapper(target.origin + target.slice_offsets[k] * target.normal + in_plane)
        known = ~np.isnan(mapped).any(axis=1)
        plane = np.full(len(mapped), np.nan, dtype=np.float32)
        plane[known] = sample_trilinear(source, values, mapped[known], fill=np.nan)
        out[k] = plane.reshape(nr, nc)
    return out
