"""The volume an ROI's contour planes stand for: slabs between planes, end caps beyond them.

Every contour plane stands for the slab of ±half the plane spacing around it, the volume
between two planes being shared half and half. Within its slab a plane's contour keeps its
shape but not necessarily its size: where a plane and its neighbours each hold one contour
whose areas differ by at most a factor of sixteen, the contour is scaled about its centroid so
that its area follows the parabola through the areas of the plane and its two neighbours
(at an end of the stack, its next two planes inwards). A parabola in
the plane position is what the cross-sections of spheres, ellipsoids, cones and cylinders
follow, so those are modelled exactly; elsewhere (several islands, holes, a contour sixteen
times the area of its neighbour) the slab keeps the contour as drawn (a staircase).

What lies beyond the first and the last plane is not in the data; :class:`Endcap` chooses:

``half``
    the end planes reach half a spacing beyond themselves, unscaled (what most planning
    systems and dicompyler-core do);
``none``
    the ROI stops at its first and last planes (a flat face lying on a contour plane: the
    convention of the analytic test sets, e.g. Nelms et al. 2015);
``auto``
    where the area profile of the last contours (the parabola through the last three, the
    line through the last two radii for a two-plane ROI) closes the ROI within one plane
    spacing beyond the end plane — a rounded end, such as a sphere's pole or a cone's apex,
    which the next plane would otherwise have shown — the ROI continues along that profile
    until it closes; otherwise the end is a flat face and stops at its plane.

A single-plane ROI is one unscaled slab of its ``slice_thickness`` whatever the end cap.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .planes import ContourPlane, PlanarStack

MAX_AREA_RATIO = 16.0
CLOSURE_TOLERANCE = 1e-6


class Endcap(str, enum.Enum):
    HALF = "half"
    NONE = "none"
    AUTO = "auto"


#: The end cap that minimises the error on the analytic DVH test set (README, DVH accuracy).
DEFAULT_ENDCAP = Endcap.AUTO


@dataclass(frozen=True)
class SlabPiece:
    """Part of a plane's slab, ``lo..hi`` mm along the normal from the plane (one side of
    it); at ``w`` the contour's area is scaled by ``1 + a·w + b·w²`` (its outline by the
    square root, about its centroid)."""

    plane: ContourPlane
    lo: float
    hi: float
    a: float = 0.0
    b: float = 0.0

    @property
    def scaled(self) -> bool:
        return self.a != 0 or self.b != 0

    def area_ratio(self, w: np.ndarray | float) -> np.ndarray:
        return np.maximum(0.0, 1.0 + self.a * np.asarray(w) + self.b * np.square(w))

    def scale(self, w: np.ndarray | float) -> np.ndarray:
        return np.sqrt(self.area_ratio(w))

    @property
    def volume_mm3(self) -> float:
        """The plane's area × the integral of the area ratio over the piece (exact: pieces
        never extend past where the ratio vanishes)."""
        def primitive(w: float) -> float:
            return w + self.a * w * w / 2 + self.b * w**3 / 3

        return self.plane.area_mm2 * (primitive(self.hi) - primitive(self.lo))


def slab_pieces(stack: PlanarStack, thickness: float, endcap: Endcap | str = Endcap.HALF
                ) -> list[SlabPiece]:
    """The pieces of every plane's slab under the end cap rule."""
    endcap = Endcap(endcap)
    planes = [p for p in stack.planes if p.area_mm2 > 0]
    half = thickness / 2.0
    if len(planes) == 1:
        return [SlabPiece(planes[0], -half, 0.0), SlabPiece(planes[0], 0.0, half)]
    out: list[SlabPiece] = []
    last = len(planes) - 1
    for i, plane in enumerate(planes):
        a, b = _profile(planes, i)
        if i == 0:
            out += _cap(planes[0:3], -1.0, half, endcap)
        else:
            out.append(SlabPiece(plane, -half, 0.0, a, b))
        if i == last:
            out += _cap(planes[::-1][0:3], 1.0, half, endcap)
        else:
            out.append(SlabPiece(plane, 0.0, half, a, b))
    return out


def _qualifies(plane: ContourPlane, neighbour: ContourPlane | None) -> bool:
    if neighbour is None or len(plane.polygons) != 1 or len(neighbour.polygons) != 1:
        return False
    ratio = neighbour.area_mm2 / plane.area_mm2
    return 1 / MAX_AREA_RATIO <= ratio <= MAX_AREA_RATIO


def _parabola(plane: ContourPlane, first: ContourPlane, second: ContourPlane
              ) -> tuple[float, float]:
    """(a, b) of the area ratio 1 + a·w + b·w² through two other planes' areas."""
    w1, w2 = first.offset - plane.offset, second.offset - plane.offset
    q1, q2 = first.area_mm2 / plane.area_mm2 - 1, second.area_mm2 / plane.area_mm2 - 1
    a, b = np.linalg.solve(np.array([[w1, w1 * w1], [w2, w2 * w2]]), [q1, q2])
    return float(a), float(b)


def _line(plane: ContourPlane, other: ContourPlane) -> tuple[float, float]:
    """(a, b) of the area ratio (1 + r·w)² whose radius runs linearly to ``other``."""
    r = (math.sqrt(other.area_mm2 / plane.area_mm2) - 1) / (other.offset - plane.offset)
    return 2 * r, r * r


def _profile(planes: list[ContourPlane], i: int) -> tuple[float, float]:
    """(a, b) of plane ``i``'s area ratio: the parabola through its neighbours' areas (the
    next two on one side at the ends of the stack), else the line of radii to the one
    neighbour that qualifies, else none."""
    plane = planes[i]
    below = planes[i - 1] if i > 0 else None
    above = planes[i + 1] if i + 1 < len(planes) else None
    lower, upper = _qualifies(plane, below), _qualifies(plane, above)
    if lower and upper:
        return _parabola(plane, below, above)  # type: ignore[arg-type]
    if not (upper or lower):
        return 0.0, 0.0
    near = above if upper else below
    assert near is not None
    far_index = i + (2 if upper else -2)
    at_end = below is None or above is None
    if at_end and 0 <= far_index < len(planes) and _qualifies(near, planes[far_index]):
        return _parabola(plane, near, planes[far_index])
    return _line(plane, near)


def _cap(ends: list[ContourPlane], outward: float, half: float, endcap: Endcap
         ) -> list[SlabPiece]:
    """What lies beyond the end plane ``ends[0]`` (``ends[1:]`` are the next planes in)."""
    end = ends[0]
    lo, hi = (-half, 0.0) if outward < 0 else (0.0, half)
    if endcap is Endcap.HALF:
        return [SlabPiece(end, lo, hi)]
    if endcap is Endcap.NONE or not _qualifies(end, ends[1]):
        return []
    if len(ends) == 3 and _qualifies(ends[1], ends[2]):
        a, b = _parabola(end, ends[1], ends[2])
    else:
        a, b = _line(end, ends[1])
    spacing = abs(ends[1].offset - end.offset)
    closure = _first_root(a * outward, b, spacing * (1 + CLOSURE_TOLERANCE) + CLOSURE_TOLERANCE)
    if closure is None:
        return []  # the profile does not close within a spacing: a flat face
    lo, hi = (-closure, 0.0) if outward < 0 else (0.0, closure)
    return [SlabPiece(end, lo, hi, a, b)]


def _first_root(a: float, b: float, limit: float) -> float | None:
    """Smallest x in (0, limit] where the area ratio 1 + a·x + b·x² reaches zero, if any (a
    cone's apex is a double root: the minimum of the parabola, touching zero)."""
    if b == 0:
        roots = [-1.0 / a] if a < 0 else []
    else:
        disc = a * a - 4 * b
        vertex = -a / (2 * b)
        if disc < 0:
            touches = b > 0 and 1 + a * vertex + b * vertex * vertex <= CLOSURE_TOLERANCE
            roots = [vertex] if touches else []
        else:
            root = math.sqrt(disc)
            roots = [(-a - root) / (2 * b), (-a + root) / (2 * b)]
    ahead = [r for r in roots if r > 0]
    return min(ahead) if ahead and min(ahead) <= limit else None


def pieces_volume_mm3(pieces: list[SlabPiece]) -> float:
    return float(sum(p.volume_mm3 for p in pieces))
