"""Cumulative dose-volume histograms of contoured ROIs.

Method (documented because DVH numbers depend on it):

1. The ROI is the *slab model* of :mod:`.structures`: every contour plane stands for a slab
   of ±half the plane spacing, with the even-odd rule inside the plane. The DVH total
   volume therefore equals :func:`roi_volume_cc` exactly.
2. Each plane is sampled on a regular in-plane lattice of spacing ``s`` (default ≤ 1 mm and
   ≤ a quarter of the dose pixel spacing, coarsened only when the ROI would need more than
   ``max_samples`` points) restricted to the plane's bounding box, and the slab is sampled
   along the normal at ``ceil(thickness / s)`` sub-planes. Lattice points inside the
   contours (scanline even-odd fill) are kept; each sample is jittered randomly inside its
   own cell (stratified sampling with a fixed ``seed``, so results are reproducible; samples
   on the contour boundary only along the normal, so none leaves the contour) so that a
   smooth dose field gives a continuous DVH instead of a lattice-induced staircase.
3. The in-plane sample weights are rescaled so that each plane's samples add up to the
   exact polygon area of the plane, removing the staircase error of the lattice.
4. The dose at every sample is the trilinear interpolation of the dose grid in patient
   coordinates (so oblique or non-axial dose grids and contour stacks are fine). Samples
   outside the dose grid get 0 Gy and are reported in ``outside_grid_cc`` / warnings.
5. Doses are binned in ``bin_width_gy`` bins; the cumulative DVH gives the volume receiving
   at least each bin's lower edge. Dx (the minimum dose received by the hottest x % of the
   volume) is interpolated linearly inside the bin; Vx (volume receiving ≥ x Gy) and the
   mean are computed from the samples themselves; min/max also include the dose at the
   contour vertices (on the mid-plane and both slab faces) so that surface extrema are
   not missed by the interior lattice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .dose import DoseGrid, sample_index
from .errors import NoDoseData
from .grid import Grid
from .structures import (
    ContourPlane,
    PlanarStack,
    Roi,
    lattice_mask,
    planar_stack,
    polygon_area_centroid,
)

DEFAULT_VOLUME_LEVELS = (98.0, 95.0, 50.0, 2.0)


@dataclass(frozen=True)
class DoseAtVolume:
    """Dx: minimum dose (Gy) received by the hottest ``volume_pct`` % of the ROI."""

    volume_pct: float
    dose_gy: float


@dataclass(frozen=True)
class VolumeAtDose:
    """Vx: volume receiving at least ``dose_gy``."""

    dose_gy: float
    volume_cc: float
    volume_pct: float


@dataclass(eq=False)
class Dvh:
    """A cumulative DVH and its usual metrics."""

    roi_number: int | None
    roi_name: str | None
    bin_width_gy: float
    dose_bins_gy: np.ndarray  # lower bin edges
    volume_cc: np.ndarray  # volume receiving >= dose_bins_gy[i]
    volume_pct: np.ndarray
    total_volume_cc: float
    min_gy: float | None
    mean_gy: float | None
    max_gy: float | None
    dose_at_volume: list[DoseAtVolume] = field(default_factory=list)
    volume_at_dose: list[VolumeAtDose] = field(default_factory=list)
    outside_grid_cc: float = 0.0
    sample_spacing_mm: float = 0.0
    samples: int = 0
    units: str | None = "GY"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.bin_width_gy <= 0:
            raise ValueError("bin width must be positive")
        if not (self.dose_bins_gy.shape == self.volume_cc.shape == self.volume_pct.shape):
            raise ValueError("DVH arrays must have equal lengths")

    def d(self, volume_pct: float) -> float | None:
        """Dose received by at least ``volume_pct`` % of the volume (interpolated)."""
        return _dose_at_volume(self.dose_bins_gy, self.volume_cc, self.bin_width_gy,
                               self.total_volume_cc, volume_pct)

    def v(self, dose_gy: float) -> float:
        """Volume (cc) receiving at least ``dose_gy``, interpolated in the cumulative DVH."""
        if self.dose_bins_gy.size == 0:
            return 0.0
        return float(np.interp(dose_gy, self.dose_bins_gy, self.volume_cc, right=0.0))


def _dose_at_volume(edges: np.ndarray, cum: np.ndarray, bw: float, total: float,
                    pct: float) -> float | None:
    if total <= 0 or edges.size == 0:
        return None
    target = total * pct / 100.0
    all_edges = np.append(edges, edges[-1] + bw)
    all_cum = np.append(cum, 0.0)
    # all_cum is non-increasing; find the bin where it drops through target.
    i = int(np.searchsorted(-all_cum, -target, side="right")) - 1
    i = min(max(i, 0), all_edges.size - 2)
    c0, c1 = all_cum[i], all_cum[i + 1]
    frac = 0.0 if c0 == c1 else (c0 - target) / (c0 - c1)
    return float(all_edges[i] + min(max(frac, 0.0), 1.0) * bw)


def _auto_spacing(grid: Grid, volume_mm3: float, max_samples: int) -> float:
    s = min(1.0, grid.row_spacing / 4.0, grid.column_spacing / 4.0)
    if volume_mm3 / s**3 > max_samples:
        s = (volume_mm3 / max_samples) ** (1.0 / 3.0)
    return s


def compute_dvh(
    dose: DoseGrid | Grid,
    values: np.ndarray,
    roi: Roi,
    *,
    bin_width_gy: float = 0.01,
    dose_levels: Sequence[float] = (),
    volume_levels: Sequence[float] = DEFAULT_VOLUME_LEVELS,
    sample_spacing_mm: float | None = None,
    slice_thickness: float | None = None,
    max_samples: int = 8_000_000,
    seed: int = 0,
) -> Dvh:
    """Cumulative DVH of ``roi`` in the dose ``values`` (frames, rows, cols) on ``dose``."""
    grid = dose.grid if isinstance(dose, DoseGrid) else dose
    if grid is None:
        raise NoDoseData("dose grid geometry unavailable")
    if values.shape != grid.shape:
        raise ValueError(f"dose values {values.shape} do not match the grid {grid.shape}")
    if bin_width_gy <= 0:
        raise ValueError("bin_width_gy must be positive")
    units = None
    if isinstance(dose, DoseGrid) and dose.units is not None:
        units = getattr(dose.units, "value", dose.units)
    warnings: list[str] = []
    stack = planar_stack(roi)
    thickness = stack.thickness(slice_thickness) if stack else 0.0
    if stack is None or thickness <= 0:
        warnings.append("ROI has no closed contours with a volume; empty DVH")
        return _empty(roi, bin_width_gy, units, warnings)
    total_mm3 = sum(p.area_mm2 for p in stack.planes) * thickness
    s = sample_spacing_mm or _auto_spacing(grid, total_mm3, max_samples)
    acc = _Accumulator(bin_width_gy, dose_levels)
    values = np.ascontiguousarray(values, dtype=np.float32)
    rng = np.random.default_rng(seed)
    for plane in stack.planes:
        _sample_plane(stack, plane, thickness, s, grid, values, acc, rng)
    warnings.extend(stack.warnings)
    if acc.outside_mm3 > 0:
        warnings.append(f"{acc.outside_mm3 / 1000:.3f} cc of the ROI lies outside the dose grid "
                        "(counted as 0 Gy)")
    return acc.result(roi, volume_levels, units, s, warnings)


def _empty(roi: Roi, bw: float, units: str | None, warnings: list[str]) -> Dvh:
    z = np.zeros(0)
    return Dvh(roi.number, roi.name, bw, z, z.copy(), z.copy(), 0.0, None, None, None,
               units=units, warnings=warnings)


def _sample_plane(stack: PlanarStack, plane: ContourPlane, thickness: float, s: float,
                  grid: Grid, values: np.ndarray, acc: _Accumulator,
                  rng: np.random.Generator) -> None:
    if plane.area_mm2 <= 0:
        return
    pts = np.concatenate(plane.polygons)
    lo = (np.floor(pts.min(axis=0) / s) + 0.5) * s
    n = np.maximum(np.ceil((pts.max(axis=0) - lo) / s).astype(int) + 1, 1)
    lattice = [(p - lo) / s for p in plane.polygons]
    mask = lattice_mask(lattice, int(n[1]), int(n[0]))  # rows = v, columns = u
    iv, iu = np.nonzero(mask)
    if iu.size == 0:
        # Contour smaller than the lattice: one sample at its centroid carries the area.
        uv = np.array([polygon_area_centroid(plane.polygons[0])[1]])
        interior = np.zeros(1, dtype=np.float32)
    else:
        uv = np.stack([lo[0] + iu * s, lo[1] + iv * s], axis=1)
        interior = _interior(mask)[iv, iu].astype(np.float32)
    n_sub = max(1, math.ceil(thickness / s - 1e-9))
    sub_t = thickness / n_sub
    weight = plane.area_mm2 * thickness / (uv.shape[0] * n_sub)
    # Index coordinates are affine in (u, v, w) except the slice index of a non-uniform grid,
    # which is derived from the position along the grid normal.
    basis = np.stack([stack.u, stack.v, stack.normal])  # rows: u, v, w axes in patient mm
    to_grid = basis @ np.stack([grid.row_direction / grid.column_spacing,
                                grid.column_direction / grid.row_spacing, grid.normal], axis=1)
    origin = grid.origin @ np.stack([grid.row_direction / grid.column_spacing,
                                     grid.column_direction / grid.row_spacing, grid.normal],
                                    axis=1)
    # Contour vertices at the slab faces and mid-plane bound min/max exactly at the surface
    # (they carry no volume).
    verts = np.concatenate(plane.polygons)
    for w in (-thickness / 2, 0.0, thickness / 2 * (1 - 1e-9)):
        vw = np.column_stack([verts, np.full(verts.shape[0], plane.offset + w)])
        crs = vw @ to_grid - origin
        kji = np.column_stack([grid.offset_to_slice_index(crs[:, 2]), crs[:, 1], crs[:, 0]])
        acc.extremes(sample_index(values, kji, fill=np.nan))
    n = uv.shape[0]
    uvw = np.empty((n, 3), dtype=np.float64)
    for j in range(n_sub):
        # Stratified jitter: each sample moves randomly inside its own lattice cell so that
        # a smooth dose field yields a continuous (not staircase) dose distribution.
        # Boundary samples are not jittered in-plane so that no sample leaves the contour.
        jit = rng.random((n, 3), dtype=np.float32) - np.float32(0.5)
        jit[:, 0] *= interior
        jit[:, 1] *= interior
        uvw[:, 0] = uv[:, 0] + jit[:, 0] * s
        uvw[:, 1] = uv[:, 1] + jit[:, 1] * s
        uvw[:, 2] = plane.offset + (j + 0.5) * sub_t - thickness / 2 + jit[:, 2] * sub_t
        crs = uvw @ to_grid - origin  # column, row, offset along the normal
        kji = np.empty_like(crs)
        kji[:, 0] = grid.offset_to_slice_index(crs[:, 2])
        kji[:, 1] = crs[:, 1]
        kji[:, 2] = crs[:, 0]
        acc.add(sample_index(values, kji, fill=np.nan), weight)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Lattice points whose four neighbours are inside too."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out


class _Accumulator:
    """Streams weighted dose samples into a histogram and running statistics."""

    def __init__(self, bw: float, dose_levels: Sequence[float]) -> None:
        self.bw = bw
        self.hist = np.zeros(1024, dtype=np.float64)
        self.levels = np.asarray(list(dose_levels), dtype=np.float64)
        self.level_mm3 = np.zeros(self.levels.size)
        self.total = 0.0
        self.weighted_sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.outside_mm3 = 0.0
        self.samples = 0

    def extremes(self, dose: np.ndarray) -> None:
        dose = dose[~np.isnan(dose)]
        if dose.size:
            self.min = min(self.min, float(dose.min()))
            self.max = max(self.max, float(dose.max()))

    def add(self, dose: np.ndarray, weight: float) -> None:
        outside = np.isnan(dose)
        if np.any(outside):
            self.outside_mm3 += float(np.count_nonzero(outside)) * weight
            dose = np.where(outside, 0.0, dose)
        dose = np.maximum(dose, 0.0)
        self.samples += dose.size
        self.total += dose.size * weight
        self.weighted_sum += float(dose.sum()) * weight
        self.min = min(self.min, float(dose.min()))
        self.max = max(self.max, float(dose.max()))
        idx = (dose / self.bw).astype(np.int64)
        counts = np.bincount(idx)
        if counts.size > self.hist.size:
            self.hist = np.concatenate([self.hist, np.zeros(counts.size - self.hist.size)])
        self.hist[: counts.size] += counts * weight
        for i, level in enumerate(self.levels):
            self.level_mm3[i] += float(np.count_nonzero(dose >= level)) * weight

    def result(self, roi: Roi, volume_levels: Sequence[float], units: str | None, s: float,
               warnings: list[str]) -> Dvh:
        nbins = int(math.floor(self.max / self.bw)) + 1 if self.samples else 0
        diff = np.zeros(nbins)
        diff[: min(nbins, self.hist.size)] = self.hist[:nbins]
        cum_mm3 = np.cumsum(diff[::-1])[::-1]
        edges = np.arange(nbins) * self.bw
        total_cc = self.total / 1000.0
        cum_cc = cum_mm3 / 1000.0
        pct = cum_cc / total_cc * 100.0 if total_cc > 0 else np.zeros_like(cum_cc)
        dvh = Dvh(roi.number, roi.name, self.bw, edges, cum_cc, pct, total_cc,
                  self.min if self.samples else None,
                  self.weighted_sum / self.total if self.total else None,
                  self.max if self.samples else None,
                  outside_grid_cc=self.outside_mm3 / 1000.0, sample_spacing_mm=s,
                  samples=self.samples, units=units, warnings=warnings)
        for x in volume_levels:
            value = dvh.d(float(x))
            if value is not None:
                dvh.dose_at_volume.append(DoseAtVolume(float(x), value))
        for level, mm3 in zip(self.levels, self.level_mm3, strict=True):
            cc = mm3 / 1000.0
            dvh.volume_at_dose.append(VolumeAtDose(float(level), cc,
                                                   cc / total_cc * 100.0 if total_cc else 0.0))
        return dvh
