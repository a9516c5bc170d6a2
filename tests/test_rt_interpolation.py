"""Dose interpolation: the limited tri-quadratic scheme against trilinear and the truth.

Grids are in index space: node (k, r, c) holds f at (k·h, r·h, c·h) mm plus an offset, so
which node a point maps to is plain arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from dicomweb.rt.interpolation import DoseSampler, limited_curvature, monotone_cells

H = 3.0
AXIS = (np.arange(21) - 10 + 0.3) * H
Z, Y, X = np.meshgrid(AXIS, AXIS, AXIS, indexing="ij")
RNG = np.random.default_rng(11)
POINTS = RNG.uniform(0, 20, (100_000, 3))  # continuous (slice, row, column) indices


def gaussian(x, y, z, sigma=12.0):
    return 60 * np.exp(-((x - 2.5) ** 2 + (y + 1.5) ** 2 + (z - 3.5) ** 2) / (2 * sigma**2))


def at_points(field) -> np.ndarray:
    mm = POINTS * H + AXIS[0]
    return field(mm[:, 2], mm[:, 1], mm[:, 0])


def corner_range(values: np.ndarray, kji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k0 = np.minimum(np.floor(kji).astype(int), np.array(values.shape) - 2)
    corners = np.array([values[k0[:, 0] + a, k0[:, 1] + b, k0[:, 2] + c]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    return corners.min(axis=0), corners.max(axis=0)


def test_linear_dose_is_exact_both_ways() -> None:
    field = lambda x, y, z: 40 + 0.7 * x - 0.3 * y + 1.1 * z  # noqa: E731
    values = field(X, Y, Z)
    for method in ("trilinear", "quadratic"):
        got = DoseSampler(values, method).at(POINTS)
        np.testing.assert_allclose(got, at_points(field), atol=2e-4)


def test_quadratic_reads_a_gaussian_peak_far_better_than_trilinear() -> None:
    values = gaussian(X, Y, Z)
    truth = at_points(gaussian)
    error = {m: np.abs(DoseSampler(values, m).at(POINTS) - truth) for m in ("trilinear",
                                                                          "quadratic")}
    assert error["quadratic"].max() < error["trilinear"].max() / 5
    assert np.sqrt(np.mean(error["quadratic"] ** 2)) < np.sqrt(np.mean(error["trilinear"] ** 2)) / 4
    # At the peak itself (between nodes): trilinear cuts it by ~1.6 %, quadratic by < 0.1 %.
    peak = np.array([[(3.5 - AXIS[0]) / H, (-1.5 - AXIS[0]) / H, (2.5 - AXIS[0]) / H]])
    assert DoseSampler(values, "trilinear").at(peak)[0] < 59.2
    assert DoseSampler(values, "quadratic").at(peak)[0] == pytest.approx(60.0, rel=1e-3)


def _steep_fields():
    for normal in ([1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 2, 3], [0.3, 0.1, 1], [0.5, -1, 0.2]):
        n = np.array(normal, float) / np.linalg.norm(normal)
        d = X * n[2] + Y * n[1] + Z * n[0]
        yield f"step{normal}", np.where(d > 1.0, 50.0, 0.0)
        yield f"penumbra 0.8 mm {normal}", 50 / (1 + np.exp(-d / 0.8))
        yield f"penumbra 3 mm {normal}", 50 / (1 + np.exp(-d / 3.0))
    yield "box", np.where((abs(X) < 7) & (abs(Y) < 5) & (abs(Z) < 9), 50.0, 0.0)
    hot = np.zeros_like(X)
    hot[10, 10, 10] = 80.0
    yield "one hot voxel", hot
    yield "field edge on a gradient", np.where(X < 4, 20 + 2 * Z, 0.0)


@pytest.mark.parametrize("name, values", list(_steep_fields()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_no_overshoot_at_steep_edges(name: str, values: np.ndarray) -> None:
    """Where the dose jumps, the quadratic value stays within the eight nodes around it:
    nothing above the plateau, nothing below the toe (what a spline would ring to)."""
    got = DoseSampler(values, "quadratic").at(POINTS)
    lo, hi = corner_range(values, POINTS)
    tolerance = 1e-5 * max(1.0, float(np.abs(values).max()))
    assert (got - hi).max() <= tolerance, name
    assert (lo - got).max() <= tolerance, name
    assert got.max() <= values.max() + tolerance and got.min() >= values.min() - tolerance


def test_curvature_terms_vanish_at_a_step_and_on_borders() -> None:
    f = np.zeros((5, 5, 8), dtype=np.float32)
    f[..., 4:] = 1.0
    m = limited_curvature(f, 2)
    assert m.shape == (5, 5, 7) and not m.any()  # second differences change sign: no term
    smooth = np.tile(-((np.arange(8) - 3.5) ** 2), (5, 5, 1)).astype(np.float32)
    m = limited_curvature(smooth, 2)
    assert np.all(m[..., 1:-1] == pytest.approx(-2.0)) and not m[..., [0, -1]].any()
    assert monotone_cells(f).all() and not monotone_cells(smooth)[..., 3].any()


def test_outside_points_get_the_fill_value() -> None:
    sampler = DoseSampler(gaussian(X, Y, Z), "quadratic")
    kji = np.array([[-0.5, 3, 3], [3, 3, 20.2], [0, 0, 0], [20 + 1e-9, 20, 20]])
    got = sampler.at(kji, fill=-1.0)
    assert got[0] == got[1] == -1.0 and got[2] >= 0 and got[3] >= 0


def test_cell_terms_are_derived_once_per_array() -> None:
    """A cached sampler hands out copies with another interpolation (one per DVH request):
    the cell terms a copy derives are the original's too, so the next request reuses them."""
    values = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    cached = DoseSampler(values)
    first = cached.with_interpolation("quadratic")
    cells = first.cells()
    second = cached.with_interpolation("quadratic")
    assert second.cells() is cells and cached.cells() is cells
    assert cached.nbytes == values.nbytes + cells.nbytes
