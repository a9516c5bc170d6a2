"""Analytic phantom used by :mod:`conformance.generate`.

Everything here is defined in the CT patient coordinate system (DICOM LPS, mm), the
Frame of Reference of the CT series, RTSTRUCT, RTPLAN and RTDOSE.  The MR series lives
in its own Frame of Reference related to the CT one by the rigid matrix ``MR_TO_CT``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --- HU / MR signal of each material --------------------------------------------------
HU_AIR = -1000
HU_WATER = 0
HU_SPHERE = 60
HU_BOX = 40
HU_RING_WALL = 300

MR_AIR = 0
MR_WATER = 800
MR_SPHERE = 2000
MR_BOX = 600
MR_RING_WALL = 200

# --- Geometry (CT patient coordinates, mm) --------------------------------------------
BODY_RADIUS = 150.0  # water cylinder along z, axis through x = y = 0
SPHERE_CENTRE = (20.0, -10.0, 0.0)
SPHERE_RADIUS = 25.0
BOX_CENTRE = (-60.0, 30.0, -1.5)
BOX_SIZE = (40.0, 30.0, 24.0)  # z extent [-13.5, 10.5] = slab edges of 3 mm CT slices
RING_CENTRE_XY = (70.0, 60.0)
RING_OUTER_RADIUS = 30.0
RING_INNER_RADIUS = 15.0
RING_Z_RANGE = (-7.5, 7.5)  # slab edges of the CT slices at z = -6 ... 6
POINT_MARKER = (-30.0, -50.0, 3.0)  # on the CT slice at z = 3

# --- Dose: D(p) = DOSE_MAX_GY * exp(-|p - SPHERE_CENTRE|^2 / (2 DOSE_SIGMA_MM^2)) -------
DOSE_MAX_GY = 66.0
DOSE_SIGMA_MM = 35.0

# --- MR -> CT rigid transform: p_ct = R_z(MR_ROTATION_DEG) @ p_mr + MR_TRANSLATION_MM -----
MR_ROTATION_DEG = 4.0
MR_TRANSLATION_MM = (12.0, -8.5, 25.0)


def mr_to_ct_matrix() -> np.ndarray:
    """4x4 homogeneous matrix mapping MR patient coordinates to CT patient coordinates."""
    theta = math.radians(MR_ROTATION_DEG)
    c, s = math.cos(theta), math.sin(theta)
    matrix = np.eye(4)
    matrix[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    matrix[:3, 3] = MR_TRANSLATION_MM
    return matrix


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to points of shape (..., 3)."""
    points = np.asarray(points, dtype=float)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def sphere_centre_mr() -> tuple[float, float, float]:
    centre = apply_matrix(np.linalg.inv(mr_to_ct_matrix()), np.array(SPHERE_CENTRE))
    return tuple(float(v) for v in centre)


# --- Material maps ---------------------------------------------------------------------
def _material_masks(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of each material at CT patient coordinates (broadcastable arrays)."""
    cx, cy, cz = SPHERE_CENTRE
    bx, by, bz = BOX_CENTRE
    sx, sy, sz = BOX_SIZE
    rx, ry = RING_CENTRE_XY
    ring_r2 = (x - rx) ** 2 + (y - ry) ** 2
    return {
        "body": x**2 + y**2 <= BODY_RADIUS**2,
        "sphere": (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= SPHERE_RADIUS**2,
        "box": (abs(x - bx) <= sx / 2) & (abs(y - by) <= sy / 2) & (abs(z - bz) <= sz / 2),
        "ring": (ring_r2 <= RING_OUTER_RADIUS**2)
        & (ring_r2 > RING_INNER_RADIUS**2)
        & (z >= RING_Z_RANGE[0])
        & (z <= RING_Z_RANGE[1]),
    }


def _compose(x, y, z, values: dict[str, int]) -> np.ndarray:
    masks = _material_masks(x, y, z)
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
    out = np.full(shape, values["air"], dtype=np.int32)
    for material in ("body", "box", "ring", "sphere"):  # later materials overwrite
        out[np.broadcast_to(masks[material], shape)] = values[material]
    return out


def ct_hu(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Hounsfield units of the phantom at CT patient coordinates."""
    values = {"air": HU_AIR, "body": HU_WATER, "box": HU_BOX, "ring": HU_RING_WALL}
    return _compose(x, y, z, values | {"sphere": HU_SPHERE})


def mr_signal(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """MR signal of the phantom at CT patient coordinates."""
    values = {"air": MR_AIR, "body": MR_WATER, "box": MR_BOX, "ring": MR_RING_WALL}
    return _compose(x, y, z, values | {"sphere": MR_SPHERE})


# --- Dose ------------------------------------------------------------------------------
def dose_gy(points: np.ndarray) -> np.ndarray:
    """Analytic dose (Gy) at CT patient coordinates of shape (..., 3)."""
    delta = np.asarray(points, dtype=float) - np.array(SPHERE_CENTRE)
    return DOSE_MAX_GY * np.exp(-np.sum(delta**2, axis=-1) / (2 * DOSE_SIGMA_MM**2))


def dose_at_distance(r: float) -> float:
    return DOSE_MAX_GY * math.exp(-(r**2) / (2 * DOSE_SIGMA_MM**2))


def sphere_dvh_reference() -> dict[str, float]:
    """Closed-form DVH metrics of the PTV sphere under the Gaussian dose centred on it.

    Dose decreases monotonically with the distance r from the centre, and the fraction of
    the sphere volume with distance <= rho is (rho/R)^3, so D_x% = D(R * (x/100)^(1/3)).
    Mean = (3/R^3) * integral_0^R rho^2 D(rho) d rho, which has a closed form in erf.
    """
    radius, sigma = SPHERE_RADIUS, DOSE_SIGMA_MM

    def d_percent(x: float) -> float:
        return dose_at_distance(radius * (x / 100.0) ** (1.0 / 3.0))

    integral = sigma**2 * (
        sigma * math.sqrt(math.pi / 2) * math.erf(radius / (sigma * math.sqrt(2)))
        - radius * math.exp(-(radius**2) / (2 * sigma**2))
    )
    return {
        "max_gy": DOSE_MAX_GY,
        "min_gy": dose_at_distance(radius),
        "mean_gy": 3.0 * DOSE_MAX_GY * integral / radius**3,
        "d2_gy": d_percent(2),
        "d50_gy": d_percent(50),
        "d95_gy": d_percent(95),
        "d98_gy": d_percent(98),
    }


def box_dose_reference() -> dict[str, float]:
    """Mean (separable erf integral), min and max dose over the BOX organ."""
    centre = np.array(SPHERE_CENTRE)
    lo = np.array(BOX_CENTRE) - np.array(BOX_SIZE) / 2
    hi = np.array(BOX_CENTRE) + np.array(BOX_SIZE) / 2
    s2 = DOSE_SIGMA_MM * math.sqrt(2)
    mean_factor = 1.0
    for a, b, c in zip(lo, hi, centre, strict=True):
        mean_factor *= (
            DOSE_SIGMA_MM
            * math.sqrt(math.pi / 2)
            * (math.erf((b - c) / s2) - math.erf((a - c) / s2))
        ) / (b - a)
    nearest = np.clip(centre, lo, hi)
    farthest = np.where(np.abs(lo - centre) > np.abs(hi - centre), lo, hi)
    return {
        "max_gy": float(dose_gy(nearest)),
        "min_gy": float(dose_gy(farthest)),
        "mean_gy": DOSE_MAX_GY * mean_factor,
    }


# --- ROI analytic descriptions -------------------------------------------------------
@dataclass(frozen=True)
class RoiTruth:
    name: str
    volume_mm3: float
    centroid: tuple[float, float, float]
    bounds: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def sphere_cap_volume(z_lo: float, z_hi: float) -> float:
    """Volume (mm^3) of the PTV sphere between two axial planes."""
    cz, r = SPHERE_CENTRE[2], SPHERE_RADIUS
    a, b = max(z_lo - cz, -r), min(z_hi - cz, r)
    if b <= a:
        return 0.0
    return math.pi * ((r**2) * (b - a) - (b**3 - a**3) / 3)


def clipped_z_length(z_lo: float, z_hi: float, extent: tuple[float, float]) -> float:
    return max(0.0, min(z_hi, extent[1]) - max(z_lo, extent[0]))


def roi_truths(ct_z_extent: tuple[float, float]) -> dict[str, dict]:
    """Analytic volume (cm^3), clipped volume, centroid and bounds of each volumetric ROI."""
    cx, cy, cz = SPHERE_CENTRE
    r = SPHERE_RADIUS
    bx, by, bz = BOX_CENTRE
    sx, sy, sz = BOX_SIZE
    rx, ry = RING_CENTRE_XY
    ring_area = math.pi * (RING_OUTER_RADIUS**2 - RING_INNER_RADIUS**2)
    body_len = ct_z_extent[1] - ct_z_extent[0]
    box_z = (bz - sz / 2, bz + sz / 2)
    entries = {
        "BODY": (
            math.pi * BODY_RADIUS**2 * body_len,
            math.pi * BODY_RADIUS**2 * body_len,
            (0.0, 0.0, sum(ct_z_extent) / 2),
            ((-BODY_RADIUS, BODY_RADIUS), (-BODY_RADIUS, BODY_RADIUS), ct_z_extent),
        ),
        "PTV_SPHERE": (
            4.0 / 3.0 * math.pi * r**3,
            sphere_cap_volume(*ct_z_extent),
            SPHERE_CENTRE,
            ((cx - r, cx + r), (cy - r, cy + r), (cz - r, cz + r)),
        ),
        "ORGAN_BOX": (
            sx * sy * sz,
            sx * sy * clipped_z_length(*box_z, ct_z_extent),
            BOX_CENTRE,
            ((bx - sx / 2, bx + sx / 2), (by - sy / 2, by + sy / 2), box_z),
        ),
        "RING_HOLLOW_CYLINDER": (
            ring_area * (RING_Z_RANGE[1] - RING_Z_RANGE[0]),
            ring_area * clipped_z_length(*RING_Z_RANGE, ct_z_extent),
            (rx, ry, sum(RING_Z_RANGE) / 2),
            (
                (rx - RING_OUTER_RADIUS, rx + RING_OUTER_RADIUS),
                (ry - RING_OUTER_RADIUS, ry + RING_OUTER_RADIUS),
                RING_Z_RANGE,
            ),
        ),
    }
    return {
        name: {
            "volume_cm3": volume / 1000.0,
            "volume_within_ct_extent_cm3": clipped / 1000.0,
            "centroid_mm": [float(v) for v in centroid],
            "bounds_mm": [[float(a), float(b)] for a, b in bounds],
        }
        for name, (volume, clipped, centroid, bounds) in entries.items()
    }
