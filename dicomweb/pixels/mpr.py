"""Multi-planar reformatting in patient coordinates (DICOM LPS, mm).

Planes and display orientation (radiological convention of viewers):

* ``axial``: normal +z (towards head); row direction (1, 0, 0) (left to right of the
  image goes to patient left), column direction (0, 1, 0) (top to bottom goes
  posterior).
* ``coronal``: normal +y; row (1, 0, 0), column (0, 0, -1) (head at the top).
* ``sagittal``: normal +x; row (0, 1, 0), column (0, 0, -1) (anterior on the left,
  head at the top). Note row x column = -x here: the normal only defines positions.
* ``oblique``: any ``normal``; the row direction is the volume's row direction (or
  patient x) projected onto the plane, column direction = normal x row.

``position_mm`` is the signed distance of the plane from the patient origin along
the normal. ``index`` picks one of the planes that step through the volume's extent
along the normal, one voxel step apart (index 0 is the plane through the extreme
voxel centre with the smallest distance; :attr:`Reformat.plane_count` tells how many).
Neither given: the plane through ``point`` or the volume centre.

Sampling is trilinear in voxel index space after mapping each output pixel's patient
position to fractional indices (:meth:`VolumeGeometry.to_index`), which handles
oblique acquisitions, uneven slice gaps and gantry tilt (shear). Samples up to half a
voxel outside the voxel centres take the edge value; farther out they are ``fill``
(NaN by default). The output grid covers the projection of the volume's voxel centres
onto the plane, with square pixels (default: the smallest in-plane voxel spacing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PixelError
from .volume import Volume, VolumeGeometry

PLANES = ("axial", "sagittal", "coronal", "oblique")
#: (row direction, column direction, normal) of the standard planes.
STANDARD_PLANES: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
}
MAX_OUTPUT_SIZE = 4096


class ReformatError(PixelError, ValueError):
    """Bad reformat request (unknown plane, missing normal, plane outside...)."""


@dataclass(frozen=True, eq=False)
class Reformat:
    """A resampled plane. ``values[r, c]`` lies at
    ``origin + c * pixel_spacing[1] * row_direction + r * pixel_spacing[0] * column_direction``
    (pixel centres, patient mm); ``pixel_spacing`` is (row spacing, column spacing)
    like DICOM Pixel Spacing."""

    values: np.ndarray
    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    normal: tuple[float, float, float]
    position: float
    index: int | None = None
    plane_count: int | None = None

    def patient_point(self, row: float, column: float) -> np.ndarray:
        """Patient mm of the (fractional) pixel ``(row, column)``."""
        return (
            np.asarray(self.origin)
            + column * self.pixel_spacing[1] * np.asarray(self.row_direction)
            + row * self.pixel_spacing[0] * np.asarray(self.column_direction)
        )


def plane_axes(
    plane: str,
    geometry: VolumeGeometry,
    normal: Sequence[float] | None = None,
    row_direction: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, normal) unit vectors of a plane."""
    if plane in STANDARD_PLANES:
        r, c, n = (np.asarray(v, dtype=np.float64) for v in STANDARD_PLANES[plane])
        return r, c, n
    if plane != "oblique":
        raise ReformatError(f"unknown plane {plane!r}; expected one of {PLANES}")
    if normal is None:
        raise ReformatError("an oblique plane needs a normal")
    n = np.asarray(normal, dtype=np.float64)
    if n.shape != (3,) or np.linalg.norm(n) < 1e-9:
        raise ReformatError("normal must be a non-zero 3-vector")
    n = n / np.linalg.norm(n)
    candidates = [row_direction] if row_direction is not None else []
    candidates += [geometry.row_direction, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)]
    for cand in candidates:
        r = np.asarray(cand, dtype=np.float64)
        r = r - (r @ n) * n
        if np.linalg.norm(r) > 1e-3:
            r = r / np.linalg.norm(r)
            return r, np.cross(n, r), n
    raise ReformatError("cannot choose a row direction for this normal")  # pragma: no cover


def _normal_step(geometry: VolumeGeometry, n: np.ndarray) -> float:
    """Distance along ``n`` of one voxel step (largest step fraction over the axes)."""
    axes = np.asarray(geometry.direction)
    weights = np.abs(axes @ n) / np.asarray(geometry.spacing)
    return float(1.0 / weights.max())


def reformat(
    volume: Volume,
    plane: str,
    *,
    position_mm: float | None = None,
    index: int | None = None,
    normal: Sequence[float] | None = None,
    point: Sequence[float] | None = None,
    spacing: float | tuple[float, float] | None = None,
    row_direction: Sequence[float] | None = None,
    fill: float = float("nan"),
) -> Reformat:
    """Resample ``volume`` on a plane; see the module docstring for conventions."""
    geometry = volume.geometry
    r_dir, c_dir, n = plane_axes(plane, geometry, normal, row_direction)
    corners = geometry.corners()
    depth = corners @ n
    step = _normal_step(geometry, n)
    d_min, d_max = float(depth.min()), float(depth.max())
    count = int(np.floor((d_max - d_min) / step + 1e-6)) + 1

    chosen: int | None = None
    if position_mm is not None:
        position = float(position_mm)
    elif index is not None:
        if not 0 <= index < count:
            raise ReformatError(f"index {index} outside 0..{count - 1}")
        chosen = int(index)
        position = d_min + chosen * step
    elif point is not None:
        position = float(np.asarray(point, dtype=np.float64) @ n)
    else:
        position = float(geometry.center() @ n)

    if spacing is None:
        row_spacing = col_spacing = float(min(geometry.spacing[0], geometry.spacing[1]))
    elif isinstance(spacing, (int, float)):
        row_spacing = col_spacing = float(spacing)
    else:
        row_spacing, col_spacing = float(spacing[0]), float(spacing[1])
    if row_spacing <= 0 or col_spacing <= 0:
        raise ReformatError("spacing must be positive")

    u, v = corners @ r_dir, corners @ c_dir
    u0, v0 = float(u.min()), float(v.min())
    ncols = int(np.floor((u.max() - u0) / col_spacing + 1e-6)) + 1
    nrows = int(np.floor((v.max() - v0) / row_spacing + 1e-6)) + 1
    if max(ncols, nrows) > MAX_OUTPUT_SIZE:
        raise ReformatError(f"output {ncols}x{nrows} exceeds {MAX_OUTPUT_SIZE}; raise spacing")
    origin = u0 * r_dir + v0 * c_dir + position * n
    values = sample_plane(volume, origin, col_spacing * r_dir, row_spacing * c_dir,
                          (nrows, ncols), fill=fill)
    return Reformat(
        values=values,
        origin=tuple(float(x) for x in origin),  # type: ignore[arg-type]
        row_direction=tuple(float(x) for x in r_dir),  # type: ignore[arg-type]
        column_direction=tuple(float(x) for x in c_dir),  # type: ignore[arg-type]
        pixel_spacing=(row_spacing, col_spacing),
        normal=tuple(float(x) for x in n),  # type: ignore[arg-type]
        position=position,
        index=chosen,
        plane_count=count,
    )


def sample_plane(volume: Volume, origin: np.ndarray, column_step: np.ndarray,
                 row_step: np.ndarray, shape: tuple[int, int], *,
                 fill: float = float("nan")) -> np.ndarray:
    """Trilinear samples (float32, ``shape`` rows × columns) at ``origin + c · column_step +
    r · row_step`` (patient mm).

    On a regular box (even gaps, no shear) the voxel index of a pixel is affine in (row,
    column), so one ``ndimage.affine_transform`` pass samples the plane without building a
    coordinate array (faster than ``map_coordinates`` given those coordinates); the rows and
    columns within half a voxel outside the voxel centres take the edge value (``nearest``),
    the rest ``fill``, decided per axis from the same affine map. Other stacks go point by
    point through :func:`sample`.
    """
    from scipy import ndimage  # imported here: scipy costs every process 0.25 s
    nrows, ncols = shape
    geometry = volume.geometry
    if not geometry.is_regular_box:
        points = (origin[None, None, :]
                  + np.arange(ncols)[None, :, None] * column_step[None, None, :]
                  + np.arange(nrows)[:, None, None] * row_step[None, None, :])
        return sample(volume, points.reshape(-1, 3), fill=fill).reshape(nrows, ncols)
    idx0, idx_c, idx_r = geometry.to_index(np.stack([origin, origin + column_step,
                                                     origin + row_step]))
    d_col, d_row = idx_c - idx0, idx_r - idx0
    matrix = np.stack([np.zeros(3), d_row, d_col], axis=1)  # input = M · (0, r, c) + idx0
    out = ndimage.affine_transform(volume.values, matrix, offset=idx0,
                                   output_shape=(1, nrows, ncols), order=1, mode="nearest",
                                   prefilter=False)[0]
    inside = _inside_plane(idx0, d_row, d_col, volume.values.shape, shape)
    if inside is not True:
        out[~inside] = fill
    return out


def _inside_plane(idx0: np.ndarray, d_row: np.ndarray, d_col: np.ndarray,
                  dims: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray | bool:
    """Pixels whose index lies within half a voxel of the voxel centres on every axis (True
    when all do). Along a row the index is linear in the column, so each row's inside part
    is one interval of columns: computed per row, then compared once per pixel."""
    rows = np.arange(shape[0], dtype=np.float64)
    lo = np.zeros(shape[0])
    hi = np.full(shape[0], shape[1] - 1.0)
    eps = 1e-9
    for axis, n in enumerate(dims):
        b = idx0[axis] + rows * d_row[axis]  # the index at column 0 of each row
        step = d_col[axis]
        if step == 0:
            hi = np.where((b >= -0.5 - eps) & (b <= n - 0.5 + eps), hi, -1.0)
            continue
        first, last = (-0.5 - b) / step, (n - 0.5 - b) / step
        if step < 0:
            first, last = last, first
        lo = np.maximum(lo, np.ceil(first - eps))
        hi = np.minimum(hi, np.floor(last + eps))
    if (lo <= 0).all() and (hi >= shape[1] - 1).all():
        return True
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    return (cols >= lo[:, None]) & (cols <= hi[:, None])


def sample(volume: Volume, points: np.ndarray, *, fill: float = float("nan")) -> np.ndarray:
    """Trilinear samples (float32) of ``volume`` at patient points (N, 3)."""
    idx = volume.geometry.to_index(points)
    return trilinear(volume.values, idx, fill=fill)


def trilinear(values: np.ndarray, idx: np.ndarray, *, fill: float = float("nan")) -> np.ndarray:
    """Trilinear interpolation of ``values[k, i, j]`` at fractional indices (N, 3).

    Indices within half a voxel outside ``[0, dim-1]`` are clamped to the edge;
    farther ones give ``fill``.
    """
    shape = np.asarray(values.shape, dtype=np.float64)
    inside = np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=1)
    out = np.full(idx.shape[0], fill, dtype=np.float32)
    if not inside.any():
        return out
    pts = np.clip(idx[inside], 0.0, shape - 1.0)
    base = np.minimum(np.floor(pts), np.maximum(shape - 2.0, 0.0)).astype(np.intp)
    frac = (pts - base).astype(np.float32)
    k, i, j = base[:, 0], base[:, 1], base[:, 2]
    dk = np.minimum(1, values.shape[0] - 1)
    di = np.minimum(1, values.shape[1] - 1)
    dj = np.minimum(1, values.shape[2] - 1)
    flat = values.reshape(-1)
    stride_k = values.shape[1] * values.shape[2]
    stride_i = values.shape[2]
    lin = k * stride_k + i * stride_i + j
    fk, fi, fj = frac[:, 0], frac[:, 1], frac[:, 2]
    c00 = flat[lin] * (1 - fj) + flat[lin + dj] * fj
    c01 = flat[lin + di * stride_i] * (1 - fj) + flat[lin + di * stride_i + dj] * fj
    lin1 = lin + dk * stride_k
    c10 = flat[lin1] * (1 - fj) + flat[lin1 + dj] * fj
    c11 = flat[lin1 + di * stride_i] * (1 - fj) + flat[lin1 + di * stride_i + dj] * fj
    c0 = c00 * (1 - fi) + c01 * fi
    c1 = c10 * (1 - fi) + c11 * fi
    out[inside] = c0 * (1 - fk) + c1 * fk
    return out
