"""Regular voxel grids in patient coordinates (PS3.3 C.7.6.2.1.1 Image Plane module).

A :class:`Grid` describes the voxel centres of an image series or of an RT Dose grid::

    P(k, r, c) = origin + c * column_spacing * row_direction
                        + r * row_spacing * column_direction
                        + slice_offsets[k] * normal

``row_direction`` / ``column_direction`` are the two direction cosines of Image Orientation
(Patient) (the direction of increasing column index and of increasing row index), Pixel
Spacing is (row spacing, column spacing) and ``normal = row_direction x column_direction``.
Slice offsets need not be uniform (RT Dose Grid Frame Offset Vector, C.8.8.3.2) but must be
strictly monotonic. Arrays on a grid are indexed ``[slice, row, column]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidGeometry


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(3)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-6:
        raise InvalidGeometry(f"{what} has zero length")
    return v / n


@dataclass(frozen=True, eq=False)
class Grid:
    """Voxel-centre geometry of a 3-D array indexed [slice, row, column]."""

    origin: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    row_spacing: float
    column_spacing: float
    slice_offsets: np.ndarray
    rows: int
    columns: int
    normal: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rd = _unit(self.row_direction, "row direction")
        cd = _unit(self.column_direction, "column direction")
        if abs(float(rd @ cd)) > 1e-3:
            raise InvalidGeometry("row and column directions are not orthogonal")
        cd = _unit(cd - (rd @ cd) * rd, "column direction")
        offsets = np.asarray(self.slice_offsets, dtype=np.float64).reshape(-1)
        if offsets.size == 0:
            raise InvalidGeometry("a grid needs at least one slice")
        if offsets.size > 1:
            d = np.diff(offsets)
            if not (np.all(d > 0) or np.all(d < 0)):
                raise InvalidGeometry("slice offsets must be strictly monotonic")
        if not (self.row_spacing > 0 and self.column_spacing > 0):
            raise InvalidGeometry("pixel spacing must be positive")
        if self.rows < 1 or self.columns < 1:
            raise InvalidGeometry("rows and columns must be positive")
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64).reshape(3))
        object.__setattr__(self, "row_direction", rd)
        object.__setattr__(self, "column_direction", cd)
        object.__setattr__(self, "slice_offsets", offsets)
        object.__setattr__(self, "normal", np.cross(rd, cd))
        object.__setattr__(self, "row_spacing", float(self.row_spacing))
        object.__setattr__(self, "column_spacing", float(self.column_spacing))
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "columns", int(self.columns))

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def regular(
        cls,
        origin: tuple[float, float, float] | np.ndarray,
        spacing: tuple[float, float, float] | np.ndarray,
        size: tuple[int, int, int],
        direction: np.ndarray | None = None,
    ) -> Grid:
        """A uniform grid; ``spacing``/``size`` are (x, y, z) = (column, row, slice).

        ``direction`` is a 3x3 matrix whose *columns* are the row direction, the column
        direction and the slice direction (identity = axial head-first-supine layout).
        """
        d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        sx, sy, sz = (float(s) for s in spacing)
        nx, ny, nz = (int(n) for n in size)
        grid = cls(
            origin=np.asarray(origin, dtype=np.float64),
            row_direction=d[:, 0],
            column_direction=d[:, 1],
            row_spacing=sy,
            column_spacing=sx,
            slice_offsets=np.arange(nz) * sz,
            rows=ny,
            columns=nx,
        )
        if grid.normal @ _unit(d[:, 2], "slice direction") < 0:
            # Left-handed direction matrix: express it with negative slice offsets.
            grid = grid.with_offsets(-grid.slice_offsets)
        return grid

    def with_offsets(self, offsets: np.ndarray) -> Grid:
        return Grid(self.origin, self.row_direction, self.column_direction, self.row_spacing,
                    self.column_spacing, np.asarray(offsets), self.rows, self.columns)

    # -- properties -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.slice_offsets.size), self.rows, self.columns)

    @property
    def slice_spacing(self) -> float:
        """Median absolute spacing between slices (0 for a single slice)."""
        if self.slice_offsets.size < 2:
            return 0.0
        return float(np.median(np.abs(np.diff(self.slice_offsets))))

    @property
    def is_uniform(self) -> bool:
        if self.slice_offsets.size < 3:
            return True
        d = np.diff(self.slice_offsets)
        return bool(np.allclose(d, d[0], rtol=1e-4, atol=1e-4))

    @property
    def voxel_volume_mm3(self) -> float:
        return self.row_spacing * self.column_spacing * (self.slice_spacing or 1.0)

    # -- coordinate transforms -------------------------------------------------------------
    def index_to_patient(self, kji: np.ndarray) -> np.ndarray:
        """Continuous (slice, row, column) indices (N,3) to patient mm (N,3)."""
        kji = np.atleast_2d(np.asarray(kji, dtype=np.float64))
        k = kji[:, 0]
        n = self.slice_offsets.size
        idx = np.arange(n, dtype=np.float64)
        offs = (np.interp(k, idx, self.slice_offsets) if n > 1
                else np.full_like(k, self.slice_offsets[0]))
        return (self.origin
                + np.outer(kji[:, 2] * self.column_spacing, self.row_direction)
                + np.outer(kji[:, 1] * self.row_spacing, self.column_direction)
                + np.outer(offs, self.normal))

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Patient mm (N,3) to continuous (slice, row, column) indices (N,3).

        Points between slices get fractional slice indices by linear interpolation of the
        (possibly non-uniform) slice offsets; points outside the slice range get a linear
        extrapolation so that "outside" tests work on the result.
        """
        xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        d = xyz - self.origin
        col = d @ self.row_direction / self.column_spacing
        row = d @ self.column_direction / self.row_spacing
        along = d @ self.normal
        return np.stack([self.offset_to_slice_index(along), row, col], axis=1)

    def offset_to_slice_index(self, along: np.ndarray) -> np.ndarray:
        offs = self.slice_offsets
        along = np.asarray(along, dtype=np.float64)
        if offs.size == 1:
            # A single slice: index 0 on the plane, unit "spacing" of 1 mm elsewhere.
            return along - offs[0]
        idx = np.arange(offs.size, dtype=np.float64)
        if offs[0] > offs[-1]:
            offs, idx = offs[::-1], idx[::-1]
        k = np.interp(along, offs, idx)
        lo = along < offs[0]
        hi = along > offs[-1]
        if np.any(lo):
            k = np.where(lo, idx[0] + (along - offs[0]) / (offs[1] - offs[0])
                         * (idx[1] - idx[0]), k)
        if np.any(hi):
            k = np.where(hi, idx[-1] + (along - offs[-1]) / (offs[-1] - offs[-2])
                         * (idx[-1] - idx[-2]), k)
        return k

    def voxel_centres(self) -> np.ndarray:
        """Patient coordinates of all voxel centres, shape (slices, rows, columns, 3)."""
        ns, nr, nc = self.shape
        c = np.arange(nc) * self.column_spacing
        r = np.arange(nr) * self.row_spacing
        pts = (self.origin[None, None, None, :]
               + c[None, None, :, None] * self.row_direction
               + r[None, :, None, None] * self.column_direction
               + self.slice_offsets[:, None, None, None] * self.normal)
        return pts

    def to_dict(self) -> dict:
        return {
            "origin": [float(v) for v in self.origin],
            "row_direction": [float(v) for v in self.row_direction],
            "column_direction": [float(v) for v in self.column_direction],
            "normal": [float(v) for v in self.normal],
            "row_spacing": self.row_spacing,
            "column_spacing": self.column_spacing,
            "slice_offsets": [float(v) for v in self.slice_offsets],
            "rows": self.rows,
            "columns": self.columns,
            "slices": int(self.slice_offsets.size),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(np.asarray(d["origin"]), np.asarray(d["row_direction"]),
                   np.asarray(d["column_direction"]), d["row_spacing"], d["column_spacing"],
                   np.asarray(d["slice_offsets"]), d["rows"], d["columns"])
