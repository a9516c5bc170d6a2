"""ROI measures: volume, centroid and bounds of an ROI's contours."""

from __future__ import annotations

import numpy as np

from .planes import planar_stack
from .slabs import pieces_volume_mm3, slab_pieces
from .structures import Roi


def roi_volume_cc(roi: Roi, slice_thickness: float | None = None,
                  endcap: str = "auto") -> float:
    """Volume (cm³) of the CLOSED_PLANAR contours under the slab model of :mod:`.slabs`
    (the DVH's: scaled slabs between planes, ``endcap`` beyond the end planes).

    ``slice_thickness`` is only used for a single-plane ROI (otherwise volume 0).
    POINT and OPEN ROIs have volume 0.
    """
    stack = planar_stack(roi)
    if stack is None:
        return 0.0
    t = stack.thickness(slice_thickness)
    if t <= 0:
        return 0.0
    return pieces_volume_mm3(slab_pieces(stack, t, endcap)) / 1000.0


def roi_centroid(roi: Roi) -> np.ndarray | None:
    """Volume centroid (mm) of closed contours; mean of the points for POINT/OPEN ROIs."""
    stack = planar_stack(roi)
    if stack is not None:
        areas = np.array([p.area_mm2 for p in stack.planes])
        if areas.sum() > 0:
            cents = np.array([p.centroid for p in stack.planes])
            return (cents * areas[:, None]).sum(axis=0) / areas.sum()
    if not roi.contours:
        return None
    return np.concatenate([c.points for c in roi.contours]).mean(axis=0)


def roi_bounds(roi: Roi) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned (min xyz, max xyz) of the contour points (the drawn extent, not the slabs)."""
    if not roi.contours:
        return None
    pts = np.concatenate([c.points for c in roi.contours])
    return pts.min(axis=0), pts.max(axis=0)


def roi_slab_bounds(roi: Roi, slice_thickness: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned bounds including the ±half-thickness slabs of the end planes."""
    stack = planar_stack(roi)
    b = roi_bounds(roi)
    if stack is None or b is None:
        return b
    half = stack.thickness(slice_thickness) / 2.0 * np.abs(stack.normal)
    return b[0] - half, b[1] + half
