"""Stratified sampling of slab pieces for the DVH (steps 2-4 of :mod:`.dvh`): in-plane
lattices, jittered samples inside the contours, their dose-grid indices, batched
interpolation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .grid import Grid
from .interpolation import DoseSampler
from .planes import PlanarStack
from .polygons import lattice_mask, points_in_polygons_banded, polygon_area_centroid
from .slabs import SlabPiece

if TYPE_CHECKING:
    from .dvh_result import Accumulator

BATCH_SAMPLES = 1_000_000  # samples interpolated per call (bounds memory: ~40 B each)


class IndexMap:
    """(u, v, w) of the contour stack → continuous (slice, row, column) dose indices."""

    def __init__(self, stack: PlanarStack, grid: Grid) -> None:
        self.grid = grid
        axes = np.stack([grid.row_direction / grid.column_spacing,
                         grid.column_direction / grid.row_spacing, grid.normal], axis=1)
        basis = np.stack([stack.u, stack.v, stack.normal])  # rows: u, v, w in patient mm
        self.matrix = basis @ axes  # uvw @ matrix = (column, row, offset along the normal)
        self.origin = grid.origin @ axes
        offsets = grid.slice_offsets
        self.uniform_step = (float(offsets[1] - offsets[0])
                             if offsets.size > 1 and grid.is_uniform else None)

    def __call__(self, uvw: np.ndarray) -> np.ndarray:
        """(N, 3) (u, v, w) → (N, 3) (slice, row, column)."""
        return self.coords(uvw[:, 0], uvw[:, 1], uvw[:, 2]).T

    def coords(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(3, N) (slice, row, column) indices of the points (u, v, w)."""
        m, o = self.matrix, self.origin
        out = np.empty((3, u.shape[0]), dtype=np.float64)
        out[2] = u * m[0, 0] + v * m[1, 0] + w * m[2, 0] - o[0]
        out[1] = u * m[0, 1] + v * m[1, 1] + w * m[2, 1] - o[1]
        along = u * m[0, 2] + v * m[1, 2] + w * m[2, 2] - o[2]
        if self.uniform_step is not None:
            out[0] = (along - self.grid.slice_offsets[0]) / self.uniform_step
        else:
            out[0] = self.grid.offset_to_slice_index(along)
        return out


@dataclass(frozen=True, eq=False)
class Lattice:
    """The in-plane cells that may hold part of a plane's contours: their centres (n, 2) and
    whether the whole cell is inside (its centre and 8 neighbours are); samples of the other
    (boundary) cells are kept only where they fall inside the contours."""

    centres: np.ndarray
    interior: np.ndarray  # bool (n,)


def lattice_of(piece: SlabPiece, s: float) -> Lattice:
    from scipy import ndimage  # imported here: scipy costs every process 0.25 s
    plane = piece.plane
    pts = np.concatenate(plane.polygons)
    lo = (np.floor(pts.min(axis=0) / s) - 0.5) * s  # one cell of margin on every side
    n = np.maximum(np.ceil((pts.max(axis=0) - lo) / s).astype(int) + 2, 1)
    mask = lattice_mask([(p - lo) / s for p in plane.polygons], int(n[1]), int(n[0]))
    if not mask.any():
        # Contour smaller than the lattice: one sample at its centroid carries the area.
        return Lattice(np.array([polygon_area_centroid(plane.polygons[0])[1]]),
                        np.ones(1, dtype=bool))
    near = ndimage.binary_dilation(mask, np.ones((3, 3), dtype=bool))
    inner = ndimage.binary_erosion(mask, np.ones((3, 3), dtype=bool), border_value=0)
    iv, iu = np.nonzero(near)
    return Lattice(np.stack([lo[0] + iu * s, lo[1] + iv * s], axis=1), inner[iv, iu])


class SampleBatch:
    """Samples (and contour vertices) of several slab pieces, interpolated together."""

    def __init__(self) -> None:
        self.coords: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.vertices: list[np.ndarray] = []
        self.size = 0

    def add(self, coords: np.ndarray, weights: np.ndarray, vertices: np.ndarray) -> None:
        self.coords.append(coords)
        self.weights.append(weights)
        self.vertices.append(vertices)
        self.size += coords.shape[1]

    def flush(self, sampler: DoseSampler, acc: Accumulator) -> None:
        if self.vertices:
            acc.extremes(sampler.at_coords(np.concatenate(self.vertices, axis=1)))
        if self.coords:
            acc.add(sampler.at_coords(np.concatenate(self.coords, axis=1)),
                    np.concatenate(self.weights))
        self.__init__()  # type: ignore[misc]


def sample_piece(stack: PlanarStack, piece: SlabPiece, lattice: Lattice, s: float,
                  to_index: IndexMap, rng: np.random.Generator, batch: SampleBatch) -> None:
    plane = piece.plane
    centre = np.array([plane.centroid @ stack.u, plane.centroid @ stack.v])
    length = piece.hi - piece.lo
    strata = max(1, math.ceil(length / s - 1e-9))
    # Contour vertices at the piece's faces and middle bound min/max exactly at the surface
    # (they carry no volume).
    verts = np.concatenate(plane.polygons)
    faces = np.array([piece.lo, 0.5 * (piece.lo + piece.hi), piece.hi - 1e-9 * length])
    k = np.repeat(piece.scale(faces), verts.shape[0])[:, None]
    vertex_uv = centre + k * (np.tile(verts, (3, 1)) - centre)
    vertices = to_index.coords(vertex_uv[:, 0], vertex_uv[:, 1],
                               plane.offset + np.repeat(faces, verts.shape[0]))
    n = lattice.centres.shape[0]
    total = n * strata
    jitter = (rng.random((3, total), dtype=np.float32) - np.float32(0.5)) * np.float32(s)
    u = np.tile(lattice.centres[:, 0], strata) + jitter[0]
    v = np.tile(lattice.centres[:, 1], strata) + jitter[1]
    w = piece.lo + (np.repeat(np.arange(strata), n) + 0.5 + jitter[2] / s) * (length / strata)
    if n > 1:  # stratified in every cell; boundary cells keep the samples inside the contours
        keep = np.tile(lattice.interior, strata)
        edge = np.nonzero(~keep)[0]
        keep[edge] = points_in_polygons_banded(plane.polygons,
                                               np.stack([u[edge], v[edge]], axis=1), s)
        u, v, w = u[keep], v[keep], w[keep]
        if u.size == 0:
            return
    volume = piece.volume_mm3
    if piece.scaled:
        ratio = piece.area_ratio(w)
        k = np.sqrt(ratio)
        u = centre[0] + k * (u - centre[0])
        v = centre[1] + k * (v - centre[1])
        total_weight = float(ratio.sum())
        if total_weight <= 0:
            return
        weights = ratio * (volume / total_weight)
    else:
        weights = np.full(u.size, volume / u.size)
    batch.add(to_index.coords(u, v, plane.offset + w), weights, vertices)
