"""RT overlays (structures, dose wash and isodoses, registered fusion) drawn on rendered
and MPR images: on the windowed 8-bit image turned RGB, before the viewport resize.

A dose or fused series in another Frame of Reference is sampled at each pixel's patient
position mapped into that frame: by the registration's matrix, or, for a Deformable Spatial
Registration, through its grid (PS3.3 C.20.3.1.1, :mod:`dicomweb.rt.deformable`), so a
deformed volume lands where the deformation puts it; outside the grid the mapping is
undefined and those pixels keep the image (never a rigid guess). Structures are drawn
through matrices only (their contours are planar; see :func:`rts.overlay_rois`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sqlalchemy import select
from starlette.requests import Request

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.rt import overlay
from dicomweb.rt import service as rts
from dicomweb.rt.dose import sample_trilinear
from dicomweb.store.repository import Store
from dicomweb.store.tables import Instance, Series

from .description import PixelDescription
from .errors import DecodeError, NotAVolume, UnsupportedTransferSyntax
from .mpr import sample as sample_volume
from .params import OverlayRequest
from .render import default_window
from .series_volumes import Volumes

SERIES_TABLE = Series.__table__
DOSE_OPACITY = 0.4
FUSE_OPACITY = 0.5
INSTANCE_TABLE = Instance.__table__
#: Patient points (N, 3) of one Frame of Reference → points of another (NaN: none).
PointMap = Callable[[np.ndarray], np.ndarray]


def series_study(store: Store, series: str, *, parameter: str) -> str:
    """The study of a stored series (any study), 404 naming ``parameter`` otherwise."""
    query = (select(SERIES_TABLE.c.study_instance_uid)
             .where(SERIES_TABLE.c.series_instance_uid == series))
    with store.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no series {series} is stored ({parameter})", parameter=parameter)
    return row[0]


def plane_mapping(store: Store, registration: str | None, image_for: str | None,
                  other_for: str | None, what: str) -> PointMap | None:
    """How the image's patient positions (``image_for``) map into ``other_for``: through the
    Deformable Registration Grid when ``registration`` is a deformable one relating the two
    (the mapper ``…/rt/dose/values`` uses; NaN outside the grid), else its matrix; None when
    nothing moves (same Frame of Reference, identity matrix)."""
    deform = rts.deformation_mapper(store, registration, image_for, other_for)
    if deform is not None:
        return deform
    m, _ = rts.frame_transform(store.engine, registration, image_for, other_for, what=what)
    if np.allclose(m, np.eye(4)):
        return None
    return lambda points: points @ m[:3, :3].T + m[:3, 3]


def sample_mapped(sampler: Callable[[np.ndarray], np.ndarray], plane: overlay.PlaneGeometry,
                  mapping: PointMap | None) -> np.ndarray:
    """``sampler`` (points → values) at the plane's pixel centres mapped by ``mapping``,
    H×W float64; NaN where the mapping has no point (outside a deformation grid)."""
    points = plane.pixel_centres().reshape(-1, 3)
    if mapping is not None:
        points = mapping(points)
    known = ~np.isnan(points).any(axis=1)
    out = np.full(len(points), np.nan, dtype=np.float64)
    if known.any():
        out[known] = sampler(points[known])
    return out.reshape(plane.rows, plane.cols)


def apply_overlays(
    store: Store, volumes: Volumes, request: Request, rgb: np.ndarray,
    plane: overlay.PlaneGeometry, image_for: str | None, wanted: OverlayRequest,
) -> np.ndarray:
    """Fusion, then dose wash and isodose lines, then contours, on an RGB uint8 image whose
    pixels lie on ``plane`` (patient mm of the Frame of Reference ``image_for``)."""
    if wanted.fuse:
        series = wanted.fuse
        study = series_study(store, series, parameter="fuse")
        try:
            found, _ = volumes.geometry(study, series)
            mapping = plane_mapping(store, wanted.registration, image_for,
                                    found.geometry.frame_of_reference_uid,
                                    f"fuse (series {series})")
            other, _ = volumes.volume(request, study, series)
        except NotAVolume as exc:
            raise Unprocessable(f"fuse: series {series} is not a volume: {exc.reason}",
                                parameter="fuse") from None
        except (DecodeError, UnsupportedTransferSyntax) as exc:
            raise Unprocessable(f"fuse: cannot decode series {series}: {exc}",
                                parameter="fuse") from None
        values = sample_mapped(lambda points: sample_volume(other, points), plane, mapping)
        if wanted.fuse_window is not None:
            window = wanted.fuse_window
        else:
            default = other.window or default_window(other.values)
            window = (default.center, default.width)
        opacity = FUSE_OPACITY if wanted.opacity is None else wanted.opacity
        rgb = overlay.fuse(rgb, values, window, opacity)
    if wanted.dose:
        loc = rts.instance_by_sop(store, wanted.dose, "RTDOSE", parameter="dose")
        dose, dose_values = rts.load_dose(store, loc)
        mapping = plane_mapping(store, wanted.registration, image_for,
                                dose.frame_of_reference_uid,
                                f"dose overlay (RT Dose {wanted.dose})")
        maximum = float(np.nanmax(dose_values)) if dose_values.size else 0.0
        grid = dose.grid
        if grid is not None and maximum > 0:
            on_plane = sample_mapped(
                lambda points: sample_trilinear(grid, dose_values, points, fill=np.nan),
                plane, mapping)
            opacity = DOSE_OPACITY if wanted.opacity is None else wanted.opacity
            rgb = overlay.dose_wash(rgb, on_plane, max_dose=maximum, opacity=opacity,
                                    isodose_levels=wanted.isodose)
    if wanted.structures:
        rois = rts.overlay_rois(store.engine, wanted.structures, wanted.rois, image_for,
                                wanted.registration)
        rgb = overlay.contour_overlay(rgb, plane, overlay.roi_overlays(rois))
    return rgb


def frame_plane(desc: PixelDescription, shape: tuple[int, ...]) -> overlay.PlaneGeometry:
    """The patient geometry of a (single-frame) description's pixels, for overlays."""
    ipp, iop = desc.image_position_patient, desc.image_orientation_patient
    spacing = desc.pixel_spacing
    if ipp is None or iop is None or spacing is None:
        raise Unprocessable("overlays need the image's Image Position (Patient), Image "
                            "Orientation (Patient) and Pixel Spacing")
    return overlay.PlaneGeometry(np.asarray(ipp), np.asarray(iop[:3]), np.asarray(iop[3:]),
                                 (spacing[0], spacing[1]), shape[0], shape[1])
