"""Volumes from image slices (PS3.3 C.7.6.2 Image Plane module) and a volume cache.

Patient coordinates are DICOM LPS millimetres. A slice's Image Orientation (Patient)
gives the row direction (direction of increasing column index) and the column direction
(increasing row index); the stack normal is row x column. Slices are sorted along the
normal. The stack may be *sheared* (gantry tilt: slice origins not along the normal)
and unevenly spaced: :class:`VolumeGeometry` keeps every slice origin so sampling maps
patient points to fractional voxel indices exactly (see :meth:`VolumeGeometry.to_index`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import NotAVolume

#: Tolerances (mm / direction cosine) when comparing geometry between slices.
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 1e-3
POSITION_TOLERANCE = 1e-3
EVEN_SPACING_TOLERANCE = 0.01  # relative gap variation still considered even


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one frame: Image Position/Orientation (Patient), Pixel Spacing
    (row spacing, column spacing) in mm, Rows, Columns, and its Modality LUT."""

    sop_instance_uid: str
    frame_number: int  # 1-based, as in WADO-RS frame lists
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    frame_of_reference_uid: str | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


@dataclass(frozen=True, eq=False)
class VolumeGeometry:
    """A sorted stack of parallel slices.

    ``size`` is (columns, rows, slices); ``spacing`` is (column spacing, row spacing,
    mean slice gap) in mm; ``direction`` rows are the row direction, column direction
    and normal; ``origin`` is the centre of voxel (0, 0, 0). ``order`` maps each sorted
    slice to its index in the list given to :func:`build_volume_geometry`.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    frame_of_reference_uid: str | None
    instance_order: tuple[tuple[str, int], ...]
    order: tuple[int, ...]
    slice_positions: tuple[float, ...]  # signed distance of each slice along the normal
    slice_origins: tuple[tuple[float, float, float], ...]
    evenly_spaced: bool
    sheared: bool
    rescale: tuple[tuple[float, float], ...] = field(default=())

    @property
    def row_direction(self) -> np.ndarray:
        return np.asarray(self.direction[0])

    @property
    def column_direction(self) -> np.ndarray:
        return np.asarray(self.direction[1])

    @property
    def normal(self) -> np.ndarray:
        return np.asarray(self.direction[2])

    def corners(self) -> np.ndarray:
        """The 8 corner voxel centres in patient mm, shape (8, 3)."""
        cols, rows, _ = self.size
        col_step = self.row_direction * self.spacing[0] * (cols - 1)
        row_step = self.column_direction * self.spacing[1] * (rows - 1)
        out = []
        for origin in (self.slice_origins[0], self.slice_origins[-1]):
            o = np.asarray(origin)
            out.extend([o, o + col_step, o + row_step, o + col_step + row_step])
        return np.asarray(out)

    def center(self) -> np.ndarray:
        return self.corners().mean(axis=0)

    @cached_property
    def is_regular_box(self) -> bool:
        """Not sheared and slice positions on an exact arithmetic progression: the
        patient-to-index mapping is then affine (fast path of :meth:`to_index`)."""
        positions = np.asarray(self.slice_positions)
        grid = positions[0] + np.arange(len(positions)) * self.spacing[2]
        return not self.sheared and bool(np.allclose(positions, grid, atol=1e-4, rtol=0))

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Patient points (N, 3) to fractional (slice, row, column) indices (N, 3).

        Uneven gaps: the slice index is piecewise linear in the distance along the
        normal. Shear: in-plane offsets are measured from the slice origin interpolated
        at that distance. Points beyond the first/last slice get indices < 0 or > n-1.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if self.is_regular_box:
            axes = np.stack([self.normal, self.column_direction, self.row_direction], axis=1)
            scale = np.array([self.spacing[2], self.spacing[1], self.spacing[0]])
            return ((points - np.asarray(self.origin)) @ axes) / scale
        origins = np.asarray(self.slice_origins)
        positions = np.asarray(self.slice_positions)
        n = len(positions)
        d = points @ self.normal
        k = np.interp(d, positions, np.arange(n, dtype=np.float64))
        first_gap = positions[1] - positions[0]
        last_gap = positions[-1] - positions[-2]
        k = np.where(d < positions[0], (d - positions[0]) / first_gap, k)
        k = np.where(d > positions[-1], n - 1 + (d - positions[-1]) / last_gap, k)
        slice_origin = np.stack(
            [_lerp_extrapolate(k, origins[:, axis]) for axis in range(3)], axis=-1
        )
        q = points - slice_origin
        j = (q @ self.row_direction) / self.spacing[0]
        i = (q @ self.column_direction) / self.spacing[1]
        return np.stack([k, i, j], axis=-1)


def _lerp_extrapolate(k: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-slice values at fractional index k, extrapolating."""
    n = len(values)
    k0 = np.clip(np.floor(k), 0, n - 2).astype(np.int64)
    t = k - k0
    return values[k0] * (1.0 - t) + values[k0 + 1] * t


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        raise NotAVolume("degenerate image orientation")
    return v / norm


def build_volume_geometry(slices: Sequence[SliceGeometry]) -> VolumeGeometry:
    """Sort slices along their normal and check they form a volume.

    Raises :class:`NotAVolume` for fewer than 2 slices, different orientations, sizes,
    pixel spacings or frames of reference, and duplicated slice positions.
    """
    if len(slices) < 2:
        raise NotAVolume("fewer than 2 slices")
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise NotAVolume("slices have different sizes")
        if not np.allclose(s.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise NotAVolume("slices have different orientations")
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, atol=SPACING_TOLERANCE):
            raise NotAVolume("slices have different pixel spacings")
        if (s.frame_of_reference_uid or first.frame_of_reference_uid) and (
            s.frame_of_reference_uid != first.frame_of_reference_uid
        ):
            raise NotAVolume("slices have different frames of reference")
    row_dir = _unit(np.asarray(first.orientation[:3], dtype=np.float64))
    col_dir = _unit(np.asarray(first.orientation[3:], dtype=np.float64))
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise NotAVolume("row and column directions are not orthogonal")
    col_dir = _unit(col_dir - (col_dir @ row_dir) * row_dir)
    normal = np.cross(row_dir, col_dir)

    positions = np.asarray([s.position for s in slices], dtype=np.float64)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    distances = distances[order]
    positions = positions[order]
    gaps = np.diff(distances)
    if np.any(gaps < POSITION_TOLERANCE):
        raise NotAVolume("duplicated slice positions")
    mean_gap = float(gaps.mean())
    evenly = bool(np.all(np.abs(gaps - mean_gap) <= EVEN_SPACING_TOLERANCE * mean_gap))
    in_plane = positions - positions[0]
    in_plane = in_plane - np.outer(in_plane @ normal, normal)
    sheared = bool(np.any(np.linalg.norm(in_plane, axis=1) > POSITION_TOLERANCE))

    sorted_slices = [slices[i] for i in order]
    return VolumeGeometry(
        size=(first.columns, first.rows, len(slices)),
        spacing=(float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), mean_gap),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=(tuple(row_dir), tuple(col_dir), tuple(normal)),  # type: ignore[arg-type]
        frame_of_reference_uid=first.frame_of_reference_uid,
        instance_order=tuple((s.sop_instance_uid, s.frame_number) for s in sorted_slices),
        order=tuple(int(i) for i in order),
        slice_positions=tuple(float(d) for d in distances),
        slice_origins=tuple(tuple(float(v) for v in p) for p in positions),  # type: ignore[misc]
        evenly_spaced=evenly,
        sheared=sheared,
        rescale=tuple((s.rescale_slope, s.rescale_intercept) for s in sorted_slices),
    )


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxel values in modality units, ``values[slice, row, column]`` (float32)."""

    values: np.ndarray
    geometry: VolumeGeometry

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


def load_volume(geometry: VolumeGeometry, frames: Sequence[np.ndarray]) -> Volume:
    """Stack decoded frames into a float32 volume, applying each slice's Modality LUT.

    ``frames`` are in the order of the slices given to :func:`build_volume_geometry`
    (they are reordered along the normal here).
    """
    cols, rows, n = geometry.size
    if len(frames) != n:
        raise NotAVolume(f"expected {n} frames, got {len(frames)}")
    values = np.empty((n, rows, cols), dtype=np.float32)
    rescale = geometry.rescale or ((1.0, 0.0),) * n
    for k, src in enumerate(geometry.order):
        frame = frames[src]
        if frame.shape != (rows, cols):
            raise NotAVolume(f"frame {src} has shape {frame.shape}, expected {(rows, cols)}")
        out = values[k]
        out[...] = frame
        slope, intercept = rescale[k]
        if slope != 1.0:
            out *= np.float32(slope)
        if intercept != 0.0:
            out += np.float32(intercept)
    return Volume(values=values, geometry=geometry)


class VolumeCache:
    """Thread-safe LRU of volumes bounded by their total bytes.

    Keys are ``(series_instance_uid, version)``: bump the version when the series
    changes so stale volumes are never served. A volume larger than the bound is
    returned by :meth:`get_or_load` but not kept.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, Volume] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()

    @staticmethod
    def key(series_uid: str, version: str) -> tuple[str, str]:
        return (str(series_uid), str(version))

    @property
    def memory_used(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable) -> Volume | None:
        with self._lock:
            volume = self._items.get(key)
            if volume is not None:
                self._items.move_to_end(key)
            return volume

    def put(self, key: Hashable, volume: Volume) -> bool:
        """Insert (most recent); evicts least recently used. False if too large."""
        with self._lock:
            self.pop(key)
            if volume.nbytes > self.max_bytes:
                return False
            self._items[key] = volume
            self._bytes += volume.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
            return True

    def pop(self, key: Hashable) -> Volume | None:
        with self._lock:
            volume = self._items.pop(key, None)
            if volume is not None:
                self._bytes -= volume.nbytes
            return volume

    def invalidate_series(self, series_uid: str) -> int:
        """Drop every version of a series; returns how many were dropped."""
        with self._lock:
            keys = [k for k in self._items if isinstance(k, tuple) and k[:1] == (series_uid,)]
            for k in keys:
                self.pop(k)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def get_or_load(self, key: Hashable, loader: Callable[[], Volume]) -> Volume:
        """Cached volume, or ``loader()`` stored then returned (loaded outside the lock)."""
        volume = self.get(key)
        if volume is None:
            volume = loader()
            self.put(key, volume)
        return volume

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"items": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes}
