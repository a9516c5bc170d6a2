"""RT overlays on rendered planes: contours, dose colour wash with isodose lines, fusion.

Pure functions on numpy arrays (no I/O), for the rendered/MPR handlers. A plane is described
by :class:`PlaneGeometry` like a DICOM image or an MPR :class:`~dicomweb.pixels.mpr.Reformat`:
pixel ``(r, c)`` has its centre at ``origin + c·pixel_spacing[1]·row_direction +
r·pixel_spacing[0]·column_direction`` (patient mm), ``pixel_spacing`` = (row spacing, column
spacing) as in DICOM Pixel Spacing. Every function returns a new ``uint8`` H×W×3 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .dose import sample_trilinear
from .grid import Grid
from .planes import PLANE_TOLERANCE_MM, planar_stack
from .rasterize import points_in_roi
from .structures import Contour, ContourGeometricType, Roi

#: Default isodose levels, in % of ``max_dose``.
ISODOSE_PERCENT = (30.0, 50.0, 70.0, 90.0, 95.0, 100.0)


@dataclass(frozen=True, eq=False)
class PlaneGeometry:
    origin: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    rows: int
    cols: int

    def __post_init__(self) -> None:
        for name in ("origin", "row_direction", "column_direction"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        object.__setattr__(self, "row_direction",
                           self.row_direction / np.linalg.norm(self.row_direction))
        object.__setattr__(self, "column_direction",
                           self.column_direction / np.linalg.norm(self.column_direction))
        object.__setattr__(self, "pixel_spacing",
                           (float(self.pixel_spacing[0]), float(self.pixel_spacing[1])))

    @classmethod
    def from_reformat(cls, reformat: Any) -> PlaneGeometry:
        """From an MPR :class:`~dicomweb.pixels.mpr.Reformat` (its ``values`` give the size)."""
        rows, cols = reformat.values.shape[:2]
        return cls(np.asarray(reformat.origin), np.asarray(reformat.row_direction),
                   np.asarray(reformat.column_direction), tuple(reformat.pixel_spacing),
                   rows, cols)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def pixel_centres(self) -> np.ndarray:
        """Patient mm of every pixel centre, (rows, cols, 3)."""
        r = np.arange(self.rows)[:, None, None] * self.pixel_spacing[0] * self.column_direction
        c = np.arange(self.cols)[None, :, None] * self.pixel_spacing[1] * self.row_direction
        return self.origin + r + c

    def to_pixels(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient points (N,3) → ((N,2) continuous (column, row), (N,) distance from plane)."""
        rel = np.asarray(xyz, dtype=np.float64) - self.origin
        col = rel @ self.row_direction / self.pixel_spacing[1]
        row = rel @ self.column_direction / self.pixel_spacing[0]
        return np.stack([col, row], axis=1), rel @ self.normal


RoiOverlay = tuple[Sequence[np.ndarray], tuple[int, int, int] | Sequence[int] | None]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H×W×3 image, got {rgb.dtype} {rgb.shape}")
    return rgb


def contour_overlay(rgb: np.ndarray, plane: PlaneGeometry, rois: Sequence[RoiOverlay],
                    tolerance_mm: float | None = None, *, width: int = 1) -> np.ndarray:
    """Draw the ROIs' contours lying on (or cutting) ``plane`` in their colours.

    ``rois`` is a list of (contours, colour): contours as (N, 3) patient-mm point arrays (a
    1-point array is a POINT, drawn as a small cross), colour (r, g, b) (yellow if None).
    A contour whose points all lie within ``tolerance_mm`` of the plane (default: half the
    smaller pixel spacing, at least 0.5 mm) is drawn as its closed polyline. Closed planar
    contours *not parallel* to the plane (sagittal/coronal/oblique views of an axial stack)
    are cut by the plane: the outline of the ROI's slab model (each contour plane stands for
    ±half the plane spacing) on the plane is drawn. The slab model also applies to a plane
    *parallel* to an ROI's contours but on none of them (an MPR or another series' slice
    between two contour planes): the contours of the plane whose slab holds it are drawn.
    """
    rgb = _check_rgb(rgb)
    if tolerance_mm is None:
        tolerance_mm = max(0.5, min(plane.pixel_spacing) / 2)
    image = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(image)
    normal = plane.normal
    cut_masks: list[tuple[np.ndarray, tuple[int, int, int]]] = []
    for contours, colour in rois:
        fill = tuple(int(c) for c in colour) if colour is not None else (255, 255, 0)
        oblique: list[np.ndarray] = []
        parallel: list[np.ndarray] = []
        drew_closed = False
        for pts in contours:
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
            if pts.shape[0] == 0:
                continue
            px, dist = plane.to_pixels(pts)
            if np.all(np.abs(dist) <= tolerance_mm):
                if pts.shape[0] == 1:
                    c, r = px[0]
                    draw.line([(c - 3, r), (c + 3, r)], fill=fill, width=width)
                    draw.line([(c, r - 3), (c, r + 3)], fill=fill, width=width)
                else:
                    xy = [(float(c), float(r)) for c, r in px]
                    draw.line(xy + [xy[0]], fill=fill, width=width)
                    drew_closed = True
            elif pts.shape[0] >= 3 and _crosses(pts, plane.origin, normal):
                oblique.append(pts)
            elif pts.shape[0] >= 3:
                parallel.append(pts)
        if oblique:
            cut_masks.append((_cut_mask(oblique, plane), fill))
        if parallel and not drew_closed:
            for pts in _slab_contours(parallel, plane):
                xy = [(float(c), float(r)) for c, r in plane.to_pixels(pts)[0]]
                draw.line(xy + [xy[0]], fill=fill, width=width)
    out = np.asarray(image).copy()
    for mask, fill in cut_masks:
        edge = mask & ~_eroded(mask)
        out[edge] = fill
    return out


def _crosses(pts: np.ndarray, origin: np.ndarray, normal: np.ndarray) -> bool:
    """True if a contour's plane is not parallel to the image plane (it can be cut by it)."""
    n = np.cross(pts[1] - pts[0], pts[2] - pts[0])
    for k in range(2, min(len(pts), 64)):
        n = np.cross(pts[k // 2] - pts[0], pts[k] - pts[0])
        if np.linalg.norm(n) > 1e-6:
            break
    if np.linalg.norm(n) < 1e-9:
        return False
    return abs(float(n / np.linalg.norm(n) @ normal)) < 1 - 1e-6


def _cut_mask(contours: list[np.ndarray], plane: PlaneGeometry) -> np.ndarray:
    roi = Roi(number=0, contours=[Contour(ContourGeometricType.CLOSED_PLANAR, c)
                                  for c in contours])
    pts = plane.pixel_centres().reshape(-1, 3)
    return points_in_roi(roi, pts).reshape(plane.rows, plane.cols)


def _slab_contours(contours: list[np.ndarray], plane: PlaneGeometry) -> list[np.ndarray]:
    """Of contours parallel to ``plane``, those of the contour plane whose slab (± half the
    plane spacing, as :func:`~dicomweb.rt.rasterize.points_in_roi`) holds the plane."""
    roi = Roi(number=0, contours=[Contour(ContourGeometricType.CLOSED_PLANAR, c)
                                  for c in contours])
    stack = planar_stack(roi)
    if stack is None:
        return []
    index = int(stack.plane_index(np.array([plane.origin @ stack.normal]),
                                  stack.thickness())[0])
    if index < 0:
        return []
    offset = stack.planes[index].offset
    return [c for c in contours
            if abs(float(np.mean(c @ stack.normal)) - offset) <= PLANE_TOLERANCE_MM]


def rgb8(image: np.ndarray) -> np.ndarray:
    """A rendered image (float or int, 0..255, H×W grayscale or H×W×3) as uint8 H×W×3."""
    image = np.asarray(image)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"expected a H×W or H×W×3 image, got {image.shape}")
    return np.ascontiguousarray(out)


def _eroded(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def jet(t: np.ndarray) -> np.ndarray:
    """The 'jet' colour map: t in [0, 1] → uint8 RGB (blue → cyan → yellow → red)."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return np.rint(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def hot(t: np.ndarray) -> np.ndarray:
    """The 'hot' colour map: black → red → yellow → white."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)],
                   axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def dose_wash(rgb: np.ndarray, dose_on_plane: np.ndarray, *, max_dose: float,
              opacity: float = 0.4, isodose_levels: Sequence[float] | None = None,
              min_dose: float | None = None, line_colors: Sequence[Sequence[int]] | None = None
              ) -> np.ndarray:
    """Colour wash of the dose (jet map from 0 to ``max_dose``) plus isodose lines.

    ``dose_on_plane`` is H×W float (Gy), NaN outside the dose grid (left untouched, as are
    doses below ``min_dose``, default the lowest isodose level or 10 % of ``max_dose``).
    ``isodose_levels`` are absolute doses (Gy); None draws :data:`ISODOSE_PERCENT` of
    ``max_dose``, ``[]`` none. A level's line is the set of pixels at or above it with a
    4-neighbour below it, drawn opaque in the level's jet colour (or ``line_colors``).
    """
    rgb = _check_rgb(rgb)
    dose = np.asarray(dose_on_plane, dtype=np.float64)
    if dose.shape != rgb.shape[:2]:
        raise ValueError(f"dose plane {dose.shape} does not match the image {rgb.shape[:2]}")
    if not max_dose > 0:
        raise ValueError("max_dose must be positive")
    levels = ([max_dose * p / 100 for p in ISODOSE_PERCENT] if isodose_levels is None
              else [float(v) for v in isodose_levels])
    if min_dose is None:
        min_dose = min(levels) if levels else 0.1 * max_dose
    valid = np.isfinite(dose)
    filled = np.where(valid, dose, -np.inf)
    wash = valid & (filled >= min_dose)
    out = rgb.astype(np.float64)
    colours = jet(np.where(valid, dose, 0.0) / max_dose).astype(np.float64)
    a = float(np.clip(opacity, 0.0, 1.0))
    out[wash] = (1 - a) * out[wash] + a * colours[wash]
    result = np.rint(out).astype(np.uint8)
    for i, level in enumerate(sorted(levels)):
        above = filled >= level
        below = ~above
        nb = np.zeros_like(above)
        nb[1:, :] |= below[:-1, :]
        nb[:-1, :] |= below[1:, :]
        nb[:, 1:] |= below[:, :-1]
        nb[:, :-1] |= below[:, 1:]
        line = above & nb
        colour = (np.asarray(line_colors[i], dtype=np.uint8) if line_colors is not None
                  else jet(np.array([level / max_dose]))[0])
        result[line] = colour
    return result


def fuse(rgb_base: np.ndarray, other_on_plane: np.ndarray, window: tuple[float, float],
         opacity: float = 0.5, *, colormap: str = "hot") -> np.ndarray:
    """Blend another series' values on the plane (H×W float, NaN outside) over ``rgb_base``.

    ``window`` is (centre, width) as DICOM VOI windows; ``colormap`` is ``hot``, ``jet`` or
    ``gray``. Pixels where the other series is NaN keep the base image.
    """
    rgb = _check_rgb(rgb_base)
    other = np.asarray(other_on_plane, dtype=np.float64)
    if other.shape != rgb.shape[:2]:
        raise ValueError(f"fused plane {other.shape} does not match the image {rgb.shape[:2]}")
    centre, width = float(window[0]), max(float(window[1]), 1e-6)
    t = (np.where(np.isfinite(other), other, 0.0) - (centre - width / 2)) / width
    if colormap == "gray":
        colours = np.repeat(np.rint(np.clip(t, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    elif colormap in ("hot", "jet"):
        colours = (hot if colormap == "hot" else jet)(t)
    else:
        raise ValueError(f"unknown colormap {colormap!r}")
    a = float(np.clip(opacity, 0.0, 1.0))
    valid = np.isfinite(other)
    out = rgb.astype(np.float64)
    out[valid] = (1 - a) * out[valid] + a * colours[valid].astype(np.float64)
    return np.rint(out).astype(np.uint8)


def sample_on_plane(plane: PlaneGeometry, grid: Grid, values: np.ndarray,
                    matrix: np.ndarray | None = None, *, fill: float = np.nan) -> np.ndarray:
    """Trilinear samples of a volume (dose or another series, ``values`` on ``grid``) at the
    plane's pixel centres → H×W float64, ``fill`` (NaN) outside the volume.

    ``matrix`` (4×4) maps the plane's patient coordinates into the volume's Frame of
    Reference, e.g. ``transform(registrations, plane_for, volume_for)``; None = same FoR.
    """
    pts = plane.pixel_centres().reshape(-1, 3)
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64)
        pts = pts @ m[:3, :3].T + m[:3, 3]
    return sample_trilinear(grid, values, pts, fill=fill).reshape(plane.rows, plane.cols)


def grid_of_volume(geometry: Any) -> Grid:
    """A :class:`Grid` for a :class:`~dicomweb.pixels.volume.VolumeGeometry` (MPR volumes)."""
    direction = np.asarray(geometry.direction, dtype=np.float64)
    offsets = np.asarray(geometry.slice_positions, dtype=np.float64)
    origin = np.asarray(geometry.origin, dtype=np.float64)
    n_geo = direction[2] / np.linalg.norm(direction[2])
    sign = 1.0 if n_geo @ np.cross(direction[0], direction[1]) >= 0 else -1.0
    return Grid(origin, direction[0], direction[1], geometry.spacing[1], geometry.spacing[0],
                sign * (offsets - float(origin @ n_geo)), geometry.size[1], geometry.size[0])


def roi_overlays(rois: Sequence[Roi]) -> list[RoiOverlay]:
    """(contours, colour) pairs of parsed :class:`Roi` objects for :func:`contour_overlay`."""
    return [([c.points for c in roi.contours], roi.display_color) for roi in rois]
