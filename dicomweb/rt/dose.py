"""RT Dose parsing, sampling and resampling (PS3.3 C.8.8.3 RT Dose module).

Geometry (C.8.8.3.2, Grid Frame Offset Vector (3004,000C)): frame k lies at
``ImagePositionPatient + offset[k] * normal`` with ``normal = row_dir × col_dir``. Two
encodings exist:

* RELATIVE – the first offset is 0 and the offsets are distances along the normal relative
  to Image Position (Patient). Valid for any Image Orientation (Patient).
* ABSOLUTE – the first offset equals the z of Image Position (Patient) and the values are
  absolute patient z coordinates; the standard only allows it for the axial orientation
  1\\0\\0\\0\\1\\0. We convert to relative: ``(z_k - z_0) / normal_z``.

Dose values are ``pixel value × Dose Grid Scaling (3004,000E)`` in the Dose Units (3004,0002)
GY (or RELATIVE). Trilinear interpolation works in continuous index space, so non-axial
orientations and non-uniform frame spacing are handled by the same code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d
from .errors import InvalidGeometry, NoDoseData, RtError
from .grid import Grid

_AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


class DoseUnits(str, enum.Enum):
    """Dose Units (3004,0002)."""

    GY = "GY"
    RELATIVE = "RELATIVE"


class DoseType(str, enum.Enum):
    """Dose Type (3004,0004)."""

    PHYSICAL = "PHYSICAL"
    EFFECTIVE = "EFFECTIVE"
    ERROR = "ERROR"


class OffsetConvention(str, enum.Enum):
    """How Grid Frame Offset Vector was encoded (C.8.8.3.2)."""

    RELATIVE = "RELATIVE"
    ABSOLUTE = "ABSOLUTE"
    SINGLE_FRAME = "SINGLE_FRAME"


@dataclass(eq=False)
class DoseGrid:
    """An RT Dose instance: geometry and metadata (pixel values via :func:`dose_values`)."""

    sop_instance_uid: str | None
    grid: Grid | None
    frame_of_reference_uid: str | None = None
    units: DoseUnits | str | None = None
    dose_type: DoseType | str | None = None
    summation_type: str | None = None  # PLAN, BEAM, FRACTION, MULTI_PLAN, ...
    scaling: float = 1.0
    referenced_plan_uids: list[str] = field(default_factory=list)
    referenced_beam_numbers: list[int] = field(default_factory=list)
    offset_convention: OffsetConvention | None = None
    has_pixel_data: bool = False
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not np.isfinite(self.scaling) or self.scaling < 0:
            raise InvalidGeometry(f"dose grid scaling must be finite and >= 0: {self.scaling}")

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return None if self.grid is None else self.grid.shape


def parse_dose(ds: Dataset) -> DoseGrid:
    """Parse an RTDOSE dataset (geometry, scaling, units and references)."""
    d.check_kind(ds, [d.RTDOSE_SOP_CLASS], ["RTDOSE"], "an RT Dose")
    w: list[str] = []
    scaling = d.number(ds, "DoseGridScaling")
    if scaling is None or not np.isfinite(scaling) or scaling < 0:
        if "PixelData" in ds:
            w.append("DoseGridScaling is missing or invalid; 1.0 assumed")
        scaling = 1.0
    units = d.text(ds, "DoseUnits", w)
    dtype = d.text(ds, "DoseType", w)
    dose = DoseGrid(
        sop_instance_uid=d.text(ds, "SOPInstanceUID", w),
        grid=None,
        frame_of_reference_uid=d.text(ds, "FrameOfReferenceUID", w),
        units=_enum_or_text(DoseUnits, units),
        dose_type=_enum_or_text(DoseType, dtype),
        summation_type=d.text(ds, "DoseSummationType", w),
        scaling=scaling,
        has_pixel_data="PixelData" in ds,
        warnings=w,
    )
    for item in d.sequence(ds, "ReferencedRTPlanSequence"):
        uid = d.text(item, "ReferencedSOPInstanceUID")
        if uid:
            dose.referenced_plan_uids.append(uid)
        for fg in d.sequence(item, "ReferencedFractionGroupSequence"):
            for beam in d.sequence(fg, "ReferencedBeamSequence"):
                n = d.integer(beam, "ReferencedBeamNumber")
                if n is not None:
                    dose.referenced_beam_numbers.append(n)
    if dose.has_pixel_data:
        try:
            dose.grid, dose.offset_convention = _parse_geometry(ds, w)
        except RtError as exc:
            w.append(f"dose grid geometry unusable: {exc}")
    else:
        w.append("no PixelData: DVH-only or empty RT Dose")
    return dose


def _enum_or_text(kind: type[enum.Enum], value: str | None):  # noqa: ANN202
    if value is None:
        return None
    try:
        return kind(value.upper())
    except ValueError:
        return value


def _parse_geometry(ds: Dataset, w: list[str]) -> tuple[Grid | None, OffsetConvention | None]:
    ipp = d.numbers(ds, "ImagePositionPatient", w, count=3)
    iop = d.numbers(ds, "ImageOrientationPatient", w, count=6)
    spacing = d.numbers(ds, "PixelSpacing", w, count=2)
    rows = d.integer(ds, "Rows", w)
    cols = d.integer(ds, "Columns", w)
    if ipp is None or iop is None or spacing is None or not rows or not cols:
        return None, None
    frames = d.integer(ds, "NumberOfFrames") or 1
    offsets, convention = frame_offsets(ds, ipp, iop, frames, w)
    grid = Grid(ipp, iop[:3], iop[3:], float(spacing[0]), float(spacing[1]), offsets, rows, cols)
    return grid, convention


def frame_offsets(ds: Dataset, ipp: np.ndarray, iop: np.ndarray, frames: int,
                  w: list[str]) -> tuple[np.ndarray, OffsetConvention]:
    """Offsets of each frame along the normal, relative to Image Position (Patient)."""
    gfov = d.numbers(ds, "GridFrameOffsetVector")
    if gfov is None:
        if frames > 1:
            w.append("GridFrameOffsetVector missing for a multi-frame dose; "
                     "SliceThickness spacing assumed")
            step = d.number(ds, "SliceThickness") or 1.0
            return np.arange(frames) * step, OffsetConvention.RELATIVE
        return np.zeros(1), OffsetConvention.SINGLE_FRAME
    if gfov.size != frames:
        w.append(f"GridFrameOffsetVector has {gfov.size} values for {frames} frame(s)")
        if gfov.size < frames:
            step = float(np.median(np.diff(gfov))) if gfov.size > 1 else 1.0
            gfov = np.concatenate([gfov, gfov[-1] + step * np.arange(1, frames - gfov.size + 1)])
        gfov = gfov[:frames]
    normal = np.cross(iop[:3], iop[3:])
    if frames == 1:
        return np.zeros(1), OffsetConvention.SINGLE_FRAME
    if abs(gfov[0]) < 1e-6:
        return gfov.copy(), OffsetConvention.RELATIVE
    if abs(gfov[0] - ipp[2]) < 1e-3 and abs(normal[2]) > 1e-6:
        if not np.allclose(iop, _AXIAL, atol=1e-4):
            w.append("ABSOLUTE GridFrameOffsetVector with a non-axial orientation "
                     "(not allowed by C.8.8.3.2); interpreted as z coordinates")
        return (gfov - ipp[2]) / normal[2], OffsetConvention.ABSOLUTE
    w.append("GridFrameOffsetVector first value is neither 0 nor the z of "
             "ImagePositionPatient; taken relative to its first value")
    return gfov - gfov[0], OffsetConvention.RELATIVE


def dose_values(ds: Dataset, dose: DoseGrid | None = None) -> np.ndarray:
    """Dose in the Dose Units (Gy for GY) as float32 (frames, rows, columns)."""
    if "PixelData" not in ds:
        raise NoDoseData("RT Dose has no PixelData")
    scaling = dose.scaling if dose is not None else (d.number(ds, "DoseGridScaling") or 1.0)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise NoDoseData(f"cannot decode RT Dose pixel data: {exc}") from exc
    frames = d.integer(ds, "NumberOfFrames") or 1
    pixels = np.asarray(pixels).reshape(frames, int(ds.Rows), int(ds.Columns))
    return (pixels.astype(np.float64) * scaling).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------
def _require_grid(dose: DoseGrid | Grid) -> Grid:
    grid = dose.grid if isinstance(dose, DoseGrid) else dose
    if grid is None:
        raise NoDoseData("dose grid geometry unavailable")
    return grid


def sample_trilinear(grid: Grid, values: np.ndarray, xyz: np.ndarray, *,
                     fill: float = np.nan, edge_tolerance: float = 1e-6) -> np.ndarray:
    """Trilinear dose at patient points (N,3) -> (N,) float64; ``fill`` outside the grid.

    Points within ``edge_tolerance`` voxels outside the outermost voxel centres are clamped
    onto the edge (trilinear interpolation is only defined between voxel centres).
    """
    kji = grid.patient_to_index(np.atleast_2d(xyz))
    return sample_index(values, kji, fill=fill, edge_tolerance=edge_tolerance)


def sample_index(values: np.ndarray, kji: np.ndarray, *, fill: float = np.nan,
                 edge_tolerance: float = 1e-6) -> np.ndarray:
    """Trilinear interpolation at continuous (slice, row, column) indices (N,3)."""
    from scipy import ndimage  # imported here: scipy costs every process 0.25 s
    shape = np.array(values.shape, dtype=np.float64)
    lo = -edge_tolerance
    hi = shape - 1 + edge_tolerance
    inside = np.all((kji >= lo) & (kji <= hi), axis=1)
    if inside.all():
        coords = np.clip(kji, 0, shape - 1).T
        return ndimage.map_coordinates(values, coords, order=1, mode="nearest",
                                       prefilter=False).astype(np.float64, copy=False)
    out = np.full(kji.shape[0], fill, dtype=np.float64)
    if np.any(inside):
        coords = np.clip(kji[inside], 0, shape - 1).T
        out[inside] = ndimage.map_coordinates(values, coords, order=1, mode="nearest",
                                              prefilter=False)
    return out


def dose_at_point(dose: DoseGrid | Grid, values: np.ndarray,
                  xyz: tuple[float, float, float] | np.ndarray) -> float | None:
    """Trilinear dose at one patient point (mm); None outside the grid."""
    v = sample_trilinear(_require_grid(dose), values, np.asarray(xyz, dtype=np.float64))[0]
    return None if np.isnan(v) else float(v)


def resample_dose(dose: DoseGrid | Grid, values: np.ndarray, target: Grid,
                  matrix: np.ndarray | None = None, *, fill: float = 0.0) -> np.ndarray:
    """Trilinear resampling of ``values`` onto the voxels of ``target`` (float32); ``fill``
    outside the source's outermost voxel centres.

    ``matrix`` maps target patient coordinates into the source's (identity if None), e.g. a
    registration from an image's Frame of Reference into the dose's. Uniform grids take one
    ``affine_transform`` pass; others are sampled slice by slice, each slice's source points
    being an affine function of (row, column).
    """
    from scipy import ndimage  # imported here: scipy costs every process 0.25 s
    src = _require_grid(dose)
    m = np.eye(4) if matrix is None else np.asarray(matrix, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if src.is_uniform and target.is_uniform and src.shape[0] > 1:
        ta, tb = _index_affine(target)
        sa, sb = _index_affine(src)
        sa_inv = np.linalg.inv(sa)
        lin = sa_inv @ m[:3, :3] @ ta
        off = sa_inv @ (m[:3, :3] @ tb + m[:3, 3] - sb)
        out = ndimage.affine_transform(values, lin, off, output_shape=target.shape, order=1,
                                       mode="constant", cval=np.nan, prefilter=False)
        out = np.where(np.isnan(out), fill, out) if not np.isnan(fill) else out
        return out.astype(np.float32, copy=False)
    ns, nr, nc = target.shape
    out = np.empty(target.shape, dtype=np.float32)
    r, c = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
    in_plane = (np.outer(c.ravel() * target.column_spacing, target.row_direction)
                + np.outer(r.ravel() * target.row_spacing, target.column_direction))
    for k in range(ns):
        pts = target.origin + target.slice_offsets[k] * target.normal + in_plane
        pts = pts @ m[:3, :3].T + m[:3, 3]
        out[k] = sample_trilinear(src, values, pts, fill=fill).reshape(nr, nc)
    return out


def _index_affine(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with patient = A @ [k, r, c] + b for a uniform grid."""
    step = grid.slice_offsets[1] - grid.slice_offsets[0] if grid.shape[0] > 1 else 1.0
    a = np.stack([grid.normal * step, grid.column_direction * grid.row_spacing,
                  grid.row_direction * grid.column_spacing], axis=1)
    b = grid.origin + grid.slice_offsets[0] * grid.normal
    return a, b


def maximum(dose: DoseGrid | Grid | None, values: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Maximum dose and the patient position (mm) of its voxel (None without geometry)."""
    flat = int(np.argmax(values))
    kji = np.array(np.unravel_index(flat, values.shape), dtype=np.float64)
    grid = None if dose is None else (dose.grid if isinstance(dose, DoseGrid) else dose)
    pos = None if grid is None else grid.index_to_patient(kji)[0]
    return float(values.reshape(-1)[flat]), pos
