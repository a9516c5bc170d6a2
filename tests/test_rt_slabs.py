"""The slab model's volumes: area profiles between planes and the end caps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_rt_structures import circle, make_roi

from dicomweb.rt.planes import planar_stack
from dicomweb.rt.roi_measures import roi_volume_cc
from dicomweb.rt.slabs import Endcap, SlabPiece, slab_pieces

EX, EY = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])


def disc_stack(radius_at, zs, n=720):
    return make_roi([circle(np.array([3.0, -2.0, z]), radius_at(z), EX, EY, n)
                     for z in zs if radius_at(z) > 1e-6])


def polygon_factor(n=720):  # area of the inscribed n-gon / area of the circle
    return n / (2 * math.pi) * math.sin(2 * math.pi / n)


@pytest.mark.parametrize("spacing", [1.0, 2.0, 3.0, 1.5])
def test_quadrics_are_exact_under_auto(spacing: float) -> None:
    """Contours on planes z = k·spacing of a sphere (poles between or on planes), a cone
    (base on a plane) and a cylinder (flat ends on planes): the area parabola and the
    closing end caps give the analytic volumes; half and none give the known biases."""
    zs = np.arange(-30, 30 + 1e-9, spacing)
    f = polygon_factor()
    sphere = disc_stack(lambda z: math.sqrt(max(400 - z * z, 0)), zs)
    cone = disc_stack(lambda z: 20 * (24 - z) / 48 if -24 <= z <= 24 else 0, zs)
    cylinder = disc_stack(lambda z: 20.0 if -24 <= z <= 24 else 0, zs)
    assert roi_volume_cc(sphere) == pytest.approx(4 / 3 * math.pi * 8 * f, rel=2e-4)
    assert roi_volume_cc(cone) == pytest.approx(math.pi * 400 * 48 / 3000 * f, rel=2e-4)
    assert roi_volume_cc(cylinder) == pytest.approx(math.pi * 400 * 48 / 1000 * f, rel=1e-9)
    # half: the cylinder gains half a spacing at each end; none: the sphere loses its caps.
    assert roi_volume_cc(cylinder, endcap="half") == pytest.approx(
        math.pi * 400 * (48 + spacing) / 1000 * f, rel=1e-9)
    assert roi_volume_cc(cylinder, endcap="none") == roi_volume_cc(cylinder)
    assert roi_volume_cc(sphere, endcap="none") < roi_volume_cc(sphere) * (1 - 1e-4)


def test_flat_and_rounded_ends_under_auto() -> None:
    """An end no smaller than its neighbour is flat (stops at its plane); a shrinking end
    whose profile closes within a spacing continues until it closes, never further."""
    sphere = disc_stack(lambda z: math.sqrt(max(400 - z * z, 0)), np.arange(-18, 19, 3.0))
    stack = planar_stack(sphere)
    pieces = slab_pieces(stack, stack.thickness(), Endcap.AUTO)
    caps = [p for p in pieces if (p.plane is stack.planes[0] and p.hi <= 0)
            or (p.plane is stack.planes[-1] and p.lo >= 0)]
    assert [round(p.hi - p.lo, 6) for p in caps] == [2.0, 2.0]  # the poles at ±20
    # Barely shrinking ends (areas 100 %, 99 %): the profile would close far away: flat.
    slow = disc_stack(lambda z: 20 - 0.01 * abs(z), np.arange(-6, 7, 3.0))
    stack = planar_stack(slow)
    pieces = slab_pieces(stack, stack.thickness(), Endcap.AUTO)
    assert min(p.plane.offset + p.lo for p in pieces) == pytest.approx(-6.0)
    assert max(p.plane.offset + p.hi for p in pieces) == pytest.approx(6.0)


def test_staircase_where_contours_change_too_much_or_are_several() -> None:
    """Two islands on a plane, or a contour 16+ times the area of its neighbour, keep their
    drawn size through the slab (no scaling across a branching or a jump)."""
    polys = []
    for z in (0.0, 2.0, 4.0):
        polys.append(circle(np.array([-50, 0, z]), 10, EX, EY, 360))
        polys.append(circle(np.array([50, 0, z]), 10, EX, EY, 360))
    stack = planar_stack(make_roi(polys))
    assert all(not p.scaled for p in slab_pieces(stack, stack.thickness(), "auto"))
    jump = disc_stack(lambda z: 2.0 if z < 3 else 20.0, [0.0, 2.0, 4.0, 6.0])
    stack = planar_stack(jump)
    pieces = slab_pieces(stack, stack.thickness(), "half")
    between = [p for p in pieces if p.plane.offset in (2.0, 4.0) and (
        (p.plane.offset == 2.0 and p.lo >= 0) or (p.plane.offset == 4.0 and p.hi <= 0))]
    assert between and all(not p.scaled for p in between)


def test_piece_volume_is_the_integral_of_the_area_ratio() -> None:
    stack = planar_stack(disc_stack(lambda z: 10.0, [0.0, 1.0]))
    piece = SlabPiece(stack.planes[0], -1.0, 0.0, a=0.4, b=-0.1)
    w = np.linspace(-1, 0, 200_001)
    ratio = 1 + 0.4 * w - 0.1 * w**2
    numeric = stack.planes[0].area_mm2 * np.trapezoid(ratio, w)
    assert piece.volume_mm3 == pytest.approx(numeric, rel=1e-9)
    assert piece.scale(-0.5) == pytest.approx(math.sqrt(1 - 0.2 - 0.025))


def test_single_plane_is_one_slab_whatever_the_endcap() -> None:
    roi = disc_stack(lambda z: 10.0, [5.0])
    for endcap in ("auto", "half", "none"):
        assert roi_volume_cc(roi, slice_thickness=2.0, endcap=endcap) == pytest.approx(
            math.pi * 100 * 2 / 1000 * polygon_factor(), rel=1e-9)
    assert roi_volume_cc(roi) == 0.0
