"""Overlays: contour lines, dose wash with isodose lines, fusion, sampling on planes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomweb.rt.grid import Grid
from dicomweb.rt.overlay import (
    PlaneGeometry,
    contour_overlay,
    dose_wash,
    fuse,
    grid_of_volume,
    jet,
    sample_on_plane,
)


def axial_plane(z: float = 0.0, size: int = 101, spacing: float = 1.0) -> PlaneGeometry:
    """Pixel (r, c) at x = c - 50, y = r - 50 (mm) for the default size."""
    half = (size - 1) / 2 * spacing
    return PlaneGeometry((-half, -half, z), (1, 0, 0), (0, 1, 0), (spacing, spacing), size, size)


def circle(cx: float, cy: float, r: float, z: float, n: int = 256) -> np.ndarray:
    a = 2 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a), np.full(n, z)], axis=1)


def black(size: int = 101) -> np.ndarray:
    return np.zeros((size, size, 3), dtype=np.uint8)


def test_axial_contour_drawn_in_roi_colour_on_its_plane_only() -> None:
    plane = axial_plane(z=3.0)
    rois = [([circle(0, 0, 20, 3.0), circle(0, 0, 20, 6.0)], (255, 0, 0)),
            ([circle(10, 10, 5, 3.0)], (0, 0, 255))]
    out = contour_overlay(black(), plane, rois)
    # The red circle crosses x = 20 at y = 0: pixel (row 50, column 70).
    assert tuple(out[50, 70]) == (255, 0, 0)
    assert tuple(out[50, 30]) == (255, 0, 0)
    assert tuple(out[50, 50]) == (0, 0, 0)  # inside stays untouched
    assert tuple(out[60, 65]) == (0, 0, 255)  # blue circle (x=15, y=10)
    # Only the z = 3 contour: the plane at z = 6 mm is 3 mm away, beyond the tolerance.
    other = contour_overlay(black(), axial_plane(z=9.0), rois)
    assert not other.any()


def test_point_roi_is_a_cross() -> None:
    out = contour_overlay(black(), axial_plane(), [([np.array([[5.0, -5.0, 0.0]])], (0, 255, 0))])
    assert tuple(out[45, 55]) == (0, 255, 0)
    assert tuple(out[45, 57]) == (0, 255, 0)


def test_sagittal_plane_cuts_an_axial_stack() -> None:
    # Sphere of radius 20 contoured every 2 mm; sagittal plane x = 0 (rows go along -z).
    stack = [circle(0, 0, math.sqrt(400 - z * z), z) for z in np.arange(-18, 19, 2.0)]
    plane = PlaneGeometry((0, -50, 50), (0, 1, 0), (0, 0, -1), (1, 1), 101, 101)
    out = contour_overlay(black(), plane, [(stack, (255, 255, 0))])
    red = out[..., 0] > 0
    # Outline at y = ±20 on z = 0 (row 50): columns 30 and 70, not the centre.
    assert red[50, 29:32].any() and red[50, 69:72].any()
    assert not red[50, 50]
    # Top of the slab model: last plane z = 18 covers up to z = 19 (row 31).
    assert red[30:33, 50].any()
    assert not red[:28, :].any()


def test_dose_wash_colours_and_isodose_lines() -> None:
    plane = axial_plane()
    pts = plane.pixel_centres()
    dose = 60.0 * np.exp(-np.sum(pts**2, axis=-1) / (2 * 20.0**2))
    dose[:, :5] = np.nan
    grey = np.full((101, 101, 3), 100, dtype=np.uint8)
    out = dose_wash(grey, dose, max_dose=60.0, opacity=0.5, isodose_levels=[30.0])
    # Centre: 60 Gy → dark red in jet, blended 50 % with grey 100.
    expected = np.rint(0.5 * 100 + 0.5 * jet(np.array([1.0]))[0].astype(float))
    assert np.array_equal(out[50, 50], expected.astype(np.uint8))
    assert tuple(out[50, 2]) == (100, 100, 100)  # NaN: untouched
    assert tuple(out[0, 100]) == (100, 100, 100)  # below the lowest level: untouched
    # The 30 Gy isodose is the circle r = 20·sqrt(2 ln 2) = 23.5 mm, drawn opaque.
    r30 = 20 * math.sqrt(2 * math.log(2))
    line = tuple(jet(np.array([0.5]))[0])
    row = out[50]
    hits = [c for c in range(101) if tuple(row[c]) == line]
    assert any(abs((c - 50) - r30) <= 1 for c in hits)
    assert any(abs((50 - c) - r30) <= 1 for c in hits)


def test_fuse_blends_windowed_values_and_keeps_nan_pixels() -> None:
    base = np.full((4, 4, 3), 200, dtype=np.uint8)
    other = np.array([[0, 100, 200, np.nan]] * 4, dtype=float)
    out = fuse(base, other, window=(100, 200), opacity=1.0, colormap="gray")
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == (128, 128, 128)
    assert tuple(out[0, 2]) == (255, 255, 255)
    assert tuple(out[0, 3]) == (200, 200, 200)
    half = fuse(base, other, window=(100, 200), opacity=0.5, colormap="hot")
    assert tuple(half[0, 2]) == (228, 228, 228)


def test_sample_on_plane_through_a_registration_matrix() -> None:
    grid = Grid.regular((-20, -20, -20), (2, 2, 2), (21, 21, 21))
    pts = grid.voxel_centres()
    values = (pts[..., 0] + 2 * pts[..., 1] + 3 * pts[..., 2]).astype(np.float32)
    plane = axial_plane(z=4.0, size=11, spacing=2.0)  # x, y in [-10, 10]
    on_plane = sample_on_plane(plane, grid, values)
    centres = plane.pixel_centres()
    assert np.allclose(on_plane, centres[..., 0] + 2 * centres[..., 1] + 12, atol=1e-4)
    shift = np.eye(4)
    shift[:3, 3] = (1.0, 0.0, -2.0)  # plane FoR → volume FoR
    moved = sample_on_plane(plane, grid, values, shift)
    assert np.allclose(moved, on_plane + 1 - 6, atol=1e-4)
    far = axial_plane(z=40.0, size=11, spacing=2.0)
    assert np.isnan(sample_on_plane(far, grid, values)).all()


def test_grid_of_volume_matches_mpr_geometry() -> None:
    from dicomweb.pixels.volume import SliceGeometry, build_volume_geometry

    slices = [SliceGeometry("1.2.3", 1, (0.0, 0.0, z), (1, 0, 0, 0, 1, 0), (0.5, 0.8), 4, 3)
              for z in (2.0, 5.0, 8.0)]
    geometry = build_volume_geometry(slices)
    grid = grid_of_volume(geometry)
    kji = np.array([[1.0, 2.0, 1.0]])
    expected = geometry.to_index(grid.index_to_patient(kji))
    assert np.allclose(expected, kji)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        dose_wash(black(5), np.zeros((4, 4)), max_dose=1.0)
    with pytest.raises(ValueError):
        fuse(black(5), np.zeros((5, 4)), window=(0, 1))
