"""RT overlays (structures, dose wash and isodoses, registered fusion) drawn on rendered
and MPR images: on the windowed 8-bit image turned RGB, before the viewport resize.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from starlette.requests import Request

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.rt import overlay
from dicomweb.rt import service as rts
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


def series_study(store: Store, series: str, *, parameter: str) -> str:
    """The study of a stored series (any study), 404 naming ``parameter`` otherwise."""
    query = (select(SERIES_TABLE.c.study_instance_uid)
             .where(SERIES_TABLE.c.series_instance_uid == series))
    with store.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no series {series} is stored ({parameter})", parameter=parameter)
    return row[0]


def apply_overlays(
    store: Store, volumes: Volumes, request: Request, rgb: np.ndarray,
    plane: overlay.PlaneGeometry, image_for: str | None, wanted: OverlayRequest,
) -> np.ndarray:
    """Fusion, then dose wash and isodose lines, then contours, on an RGB uint8 image whose
    pixels lie on ``plane`` (patient mm of the Frame of Reference ``image_for``)."""

    def matrix(other_for: str | None, what: str) -> np.ndarray | None:
        m, _ = rts.frame_transform(store.engine, wanted.registration, image_for, other_for,
                                   what=what)
        return None if np.allclose(m, np.eye(4)) else m

    if wanted.fuse:
        series = wanted.fuse
        study = series_study(store, series, parameter="fuse")
        try:
            found, _ = volumes.geometry(study, series)
            m = matrix(found.geometry.frame_of_reference_uid, f"fuse (series {series})")
            other, _ = volumes.volume(request, study, series)
        except NotAVolume as exc:
            raise Unprocessable(f"fuse: series {series} is not a volume: {exc.reason}",
                                parameter="fuse") from None
        except (DecodeError, UnsupportedTransferSyntax) as exc:
            raise Unprocessable(f"fuse: cannot decode series {series}: {exc}",
                                parameter="fuse") from None
        points = plane.pixel_centres().reshape(-1, 3)
        if m is not None:
            points = points @ m[:3, :3].T + m[:3, 3]
        values = sample_volume(other, points).reshape(plane.rows, plane.cols)
        if wanted.fuse_window is not None:
            window = wanted.fuse_window
        else:
            default = other.window or default_window(other.values)
            window = (default.center, default.width)
        opacity = FUSE_OPACITY if wanted.opacity is None else wanted.opacity
        rgb = overlay.fuse(rgb, values, window, opacity)
    if wanted.dose:
        loc = rts.instance_by_sop(store, wanted.dose, "RTDOSE", parameter="dose")
        dose, values = rts.load_dose(store, loc)
        m = matrix(dose.frame_of_reference_uid, f"dose overlay (RT Dose {wanted.dose})")
        maximum = float(np.nanmax(values)) if values.size else 0.0
        if dose.grid is not None and maximum > 0:
            on_plane = overlay.sample_on_plane(plane, dose.grid, values, m)
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
