"""The DVH result (PS3.3 C.8.8.4 semantics: cumulative volume per dose bin) and the
accumulator that streams weighted dose samples into it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .structures import Roi


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
        return dose_at_volume(self.dose_bins_gy, self.volume_cc, self.bin_width_gy,
                               self.total_volume_cc, volume_pct)

    def v(self, dose_gy: float) -> float:
        """Volume (cc) receiving at least ``dose_gy``, interpolated in the cumulative DVH."""
        if self.dose_bins_gy.size == 0:
            return 0.0
        return float(np.interp(dose_gy, self.dose_bins_gy, self.volume_cc, right=0.0))


def dose_at_volume(edges: np.ndarray, cum: np.ndarray, bw: float, total: float,
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


class Accumulator:
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

    def add(self, dose: np.ndarray, weight: float | np.ndarray) -> None:
        """Samples of ``dose`` (NaN: outside the grid), each of ``weight`` mm³."""
        per_sample = np.ndim(weight) > 0
        outside = np.isnan(dose)
        if np.any(outside):
            self.outside_mm3 += float(np.sum(weight[outside]) if per_sample
                                      else np.count_nonzero(outside) * weight)
            dose = np.where(outside, 0.0, dose)
        dose = np.maximum(dose, 0.0)
        self.samples += dose.size
        idx = (dose / self.bw).astype(np.int64)
        if per_sample:
            self.total += float(np.sum(weight))
            self.weighted_sum += float(dose @ weight)
            counts = np.bincount(idx, weights=weight)
        else:
            self.total += dose.size * weight
            self.weighted_sum += float(dose.sum()) * weight
            counts = np.bincount(idx) * weight
        self.min = min(self.min, float(dose.min()))
        self.max = max(self.max, float(dose.max()))
        if counts.size > self.hist.size:
            self.hist = np.concatenate([self.hist, np.zeros(counts.size - self.hist.size)])
        self.hist[: counts.size] += counts
        for i, level in enumerate(self.levels):
            above = dose >= level
            self.level_mm3[i] += float(np.sum(weight[above]) if per_sample
                                       else np.count_nonzero(above) * weight)

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
