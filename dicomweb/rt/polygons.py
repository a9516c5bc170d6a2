"""Polygon arithmetic for contours: plane normal and basis, area and centroid, the
even-odd point-in-polygon test (PS3.3 C.8.8.6: inner contours are holes) and scanline fill."""

from __future__ import annotations

import numpy as np


def newell_normal(pts: np.ndarray) -> np.ndarray:
    """Area-weighted normal of a closed polygon (Newell's method); length = 2 * area."""
    nxt = np.roll(pts, -1, axis=0)
    return np.array([
        np.sum((pts[:, 1] - nxt[:, 1]) * (pts[:, 2] + nxt[:, 2])),
        np.sum((pts[:, 2] - nxt[:, 2]) * (pts[:, 0] + nxt[:, 0])),
        np.sum((pts[:, 0] - nxt[:, 0]) * (pts[:, 1] + nxt[:, 1])),
    ])


def in_plane_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal in-plane axes (u, v) for the unit normal ``n``."""
    # Use patient x as the first in-plane axis when possible so axial stacks keep (x, y).
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = ref - (ref @ n) * n
    u /= np.linalg.norm(u)
    return u, np.cross(n, u)


def polygon_area_centroid(poly: np.ndarray) -> tuple[float, np.ndarray]:
    """Signed area (shoelace) and centroid of a 2-D polygon (M, 2)."""
    x, y = poly[:, 0], poly[:, 1]
    # Shift to the first vertex to limit cancellation for coordinates far from the origin.
    x0, y0 = x[0], y[0]
    x, y = x - x0, y - y0
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = 0.5 * float(np.sum(cross))
    if abs(area) < 1e-12:
        return 0.0, np.array([x0 + x.mean(), y0 + y.mean()])
    cx = float(np.sum((x + xn) * cross)) / (6.0 * area)
    cy = float(np.sum((y + yn) * cross)) / (6.0 * area)
    return area, np.array([cx + x0, cy + y0])


def points_in_polygons(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                       pts: np.ndarray) -> np.ndarray:
    """Even-odd rule: True where a ray from the point crosses an odd number of edges.

    Vectorised over points and edges (chunked to bound memory).
    """
    pts = np.asarray(pts, dtype=np.float64)
    inside = np.zeros(pts.shape[0], dtype=bool)
    if not polygons or pts.shape[0] == 0:
        return inside
    a = np.concatenate([p for p in polygons])
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    keep = a[:, 1] != b[:, 1]  # horizontal edges never cross a horizontal ray
    a, b = a[keep], b[keep]
    chunk = max(1, 4_000_000 // max(1, a.shape[0]))
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        px, py = p[:, 0:1], p[:, 1:2]
        straddle = (a[None, :, 1] > py) != (b[None, :, 1] > py)
        t = (py - a[None, :, 1]) / (b[None, :, 1] - a[None, :, 1])
        xcross = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
        crossings = np.count_nonzero(straddle & (xcross > px), axis=1)
        inside[s:s + chunk] = (crossings % 2) == 1
    return inside


def points_in_polygons_banded(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                              pts: np.ndarray, band: float) -> np.ndarray:
    """:func:`points_in_polygons` for many points: each point is tested only against the
    edges crossing its horizontal band of height ``band`` (a few, not all of them)."""
    pts = np.asarray(pts, dtype=np.float64)
    inside = np.zeros(pts.shape[0], dtype=bool)
    if not polygons or pts.shape[0] == 0 or band <= 0:
        return inside
    a = np.concatenate(list(polygons))
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    keep = a[:, 1] != b[:, 1]
    a, b = a[keep], b[keep]
    y0 = float(pts[:, 1].min())
    bands = int((float(pts[:, 1].max()) - y0) // band) + 1
    first = np.floor((np.minimum(a[:, 1], b[:, 1]) - y0) / band)
    last = np.floor((np.maximum(a[:, 1], b[:, 1]) - y0) / band)
    useful = (last >= 0) & (first < bands)
    a, b = a[useful], b[useful]
    first = np.clip(first[useful], 0, bands - 1).astype(np.intp)
    last = np.clip(last[useful], 0, bands - 1).astype(np.intp)
    if a.shape[0] == 0:
        return inside
    counts = last - first + 1
    edge = np.repeat(np.arange(a.shape[0]), counts)
    offset = np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    where = first[edge] + offset
    order = np.argsort(where, kind="stable")
    edge, where = edge[order], where[order]
    per_band = np.bincount(where, minlength=bands)
    width = int(per_band.max())
    table = np.full((bands, width), -1, dtype=np.intp)
    slot = np.arange(edge.size) - np.repeat(np.cumsum(per_band) - per_band, per_band)
    table[where, slot] = edge
    point_band = np.clip(((pts[:, 1] - y0) // band).astype(np.intp), 0, bands - 1)
    chunk = max(1, 4_000_000 // width)
    for start in range(0, pts.shape[0], chunk):
        p = pts[start:start + chunk]
        idx = table[point_band[start:start + chunk]]
        valid = idx >= 0
        ea, eb = a[idx], b[idx]
        py, px = p[:, 1:2], p[:, 0:1]
        straddle = valid & ((ea[..., 1] > py) != (eb[..., 1] > py))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (py - ea[..., 1]) / (eb[..., 1] - ea[..., 1])
        xcross = ea[..., 0] + t * (eb[..., 0] - ea[..., 0])
        inside[start:start + chunk] = np.count_nonzero(straddle & (xcross > px), axis=1) % 2 == 1
    return inside


def lattice_mask(polygons: list[np.ndarray] | tuple[np.ndarray, ...],
                 nrows: int, ncols: int) -> np.ndarray:
    """Even-odd scanline fill of polygons given in continuous (column, row) lattice units.

    Returns a (nrows, ncols) bool mask of the lattice points (c, r), c, r integers, lying
    inside. Vectorised: every edge is expanded to the rows it crosses, each crossing toggles
    the parity of all columns to its right (prefix sum of a difference array).
    """
    mask = np.zeros((nrows, ncols), dtype=bool)
    if not polygons:
        return mask
    a = np.concatenate(list(polygons))
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    ylo, yhi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    # Same half-open rule as points_in_polygons: row r crosses the edge iff ylo <= r < yhi.
    r0 = np.maximum(np.ceil(ylo), 0).astype(np.int64)
    r1 = np.minimum(np.ceil(yhi) - 1, nrows - 1).astype(np.int64)
    counts = np.maximum(r1 - r0 + 1, 0)
    valid = (counts > 0) & (a[:, 1] != b[:, 1])
    if not np.any(valid):
        return mask
    a, b, r0, counts = a[valid], b[valid], r0[valid], counts[valid]
    edge = np.repeat(np.arange(a.shape[0]), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    rows = r0[edge] + (np.arange(edge.size) - start)
    ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x = ax + (rows - ay) * (bx - ax) / (by - ay)
    # Points with c < x see this crossing to their right -> toggle columns [0, ceil(x)).
    first_right = np.clip(np.ceil(x), 0, ncols).astype(np.int64)
    diff = np.zeros((nrows, ncols + 1), dtype=np.int32)
    np.add.at(diff, (rows, np.zeros_like(rows)), 1)
    np.add.at(diff, (rows, first_right), -1)
    parity = np.cumsum(diff[:, :ncols], axis=1) & 1
    return parity.astype(bool)
