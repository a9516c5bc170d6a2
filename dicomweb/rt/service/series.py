"""The voxel grid of an image series, built from its instances' stored DICOM JSON (no image
file is parsed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.store.repository import Store

from ..errors import InvalidGeometry
from ..grid import Grid


@dataclass(frozen=True, eq=False)
class SeriesGrid:
    series_instance_uid: str
    grid: Grid
    frame_of_reference_uid: str | None
    modality: str | None
    sop_instance_uids: tuple[str, ...]  # in slice order


def _value(md: dict, tag: str) -> list | None:
    element = md.get(tag)
    return element.get("Value") if isinstance(element, dict) else None


def series_grid(store: Store, study: str, series: str, *, parameter: str = "series"
                ) -> SeriesGrid:
    """The voxel grid of a single-frame image series, from its instances' metadata JSON."""
    try:
        locs = store.locate(study, series, with_metadata=True)
    except NotFound:
        raise NotFound(f"no series {series} in study {study}", parameter=parameter) from None
    slices = []
    for_uids, modalities = set(), set()
    for loc in locs:
        md = orjson.loads(loc.metadata_json or b"{}")
        ipp, iop = _value(md, "00200032"), _value(md, "00200037")
        spacing = _value(md, "00280030")
        rows, cols = _value(md, "00280010"), _value(md, "00280011")
        frames = _value(md, "00280008")
        if not (ipp and iop and spacing and rows and cols):
            continue  # not an image slice (e.g. a localiser without geometry)
        if frames and int(float(frames[0])) > 1:
            raise Unprocessable(f"series {series} holds multi-frame images; only series of "
                                "single-frame slices can serve as a grid", parameter=parameter)
        for_uid = _value(md, "00200052")
        for_uids.add(for_uid[0] if for_uid else None)
        modality = _value(md, "00080060")
        modalities.add(modality[0] if modality else None)
        slices.append((loc.sop_instance_uid, np.array([float(v) for v in ipp]),
                       np.array([float(v) for v in iop]), float(spacing[0]), float(spacing[1]),
                       int(rows[0]), int(cols[0])))
    if not slices:
        raise Unprocessable(f"series {series} has no image slices with a geometry",
                            parameter=parameter)
    iop0 = slices[0][2]
    if any(not np.allclose(s[2], iop0, atol=1e-4) or s[3:] != slices[0][3:] for s in slices):
        raise Unprocessable(f"series {series} is not one regular stack (orientation, spacing "
                            "or size differ between slices)", parameter=parameter)
    normal = np.cross(iop0[:3], iop0[3:])
    slices.sort(key=lambda s: float(s[1] @ normal))
    along = np.array([float(s[1] @ normal) for s in slices])
    if along.size > 1 and np.any(np.diff(along) < 1e-4):
        raise Unprocessable(f"series {series} has several slices at the same position",
                            parameter=parameter)
    first = slices[0]
    try:
        grid = Grid(first[1], iop0[:3], iop0[3:], first[3], first[4], along - along[0],
                    first[5], first[6])
    except InvalidGeometry as exc:
        raise Unprocessable(f"series {series}: {exc}", parameter=parameter) from exc
    return SeriesGrid(series, grid, next(iter(for_uids)) if len(for_uids) == 1 else None,
                      next(iter(modalities)) if len(modalities) == 1 else None,
                      tuple(s[0] for s in slices))
