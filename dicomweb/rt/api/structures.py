"""RT Structure Set resources: ``…/rt/rois``, ``…/rt/rois/{n}``, ``…/rt/rois/{n}/mask``."""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import Unprocessable
from dicomweb.store.repository import Store

from .. import service as svc
from ..planes import planar_stack
from ..rasterize import rasterize_roi
from ..roi_measures import roi_volume_cc
from ..serialize import contour_to_json
from ..slabs import DEFAULT_ENDCAP, Endcap
from .common import (
    budgeted,
    choice,
    grid_headers,
    grid_json,
    int_param,
    json_response,
    mask_cost,
    path_of,
    query_params,
    required_param,
    run_rt,
    vec,
    wants_binary,
)


def _roi_summary(row: Any, frames: list[str]) -> dict:
    return {
        "number": row.roi_number,
        "name": row.name,
        "interpreted_type": row.interpreted_type,
        "display_color": svc.loads(row.display_color),
        "frame_of_reference_uid": svc.roi_frame_of_reference(row, frames),
        "generation_algorithm": row.generation_algorithm,
        "contour_count": row.contour_count,
        "volume_cc": row.volume_cc,
        "centroid": vec((row.centroid_x, row.centroid_y, row.centroid_z)),
        "bounds": None if row.min_x is None else {
            "min": vec((row.min_x, row.min_y, row.min_z)),
            "max": vec((row.max_x, row.max_y, row.max_z))},
    }


def _structure_set(store: Store, study: str, series: str, sop: str) -> tuple[Any, list[str]]:
    svc.locate_rt(store, study, series, sop, "RTSTRUCT")
    return svc.structure_set_row(store.engine, sop), svc.structure_set_frames(store.engine, sop)


def _volume(store: Store, sop: str, row: Any, endcap: str) -> float | None:
    """The indexed volume (the default end cap's), else computed under ``endcap``."""
    if endcap == DEFAULT_ENDCAP.value or row.volume_cc is None:
        return row.volume_cc
    return roi_volume_cc(svc.load_roi(store.engine, sop, row), endcap=endcap)


def _rois_body(store: Store, study: str, series: str, sop: str, endcap: str) -> dict:
    ss, frames = _structure_set(store, study, series, sop)
    rois = []
    for row in svc.roi_rows(store.engine, sop):
        summary = _roi_summary(row, frames)
        summary["volume_cc"] = _volume(store, sop, row, endcap)
        rois.append(summary)
    return {
        "sop_instance_uid": sop,
        "label": ss.label,
        "name": ss.name,
        "date": ss.date,
        "frame_of_reference_uids": frames,
        "referenced_series_uids": svc.loads(ss.referenced_series_uids) or [],
        "roi_count": ss.roi_count,
        "endcap": endcap,
        "rois": rois,
        "warnings": svc.loads(ss.warnings) or [],
    }


def endcap_of(request: Request, allowed: set[str] | None = None) -> str:
    params = query_params(request, {"endcap"} | (allowed or set()))
    return choice(params, "endcap", tuple(e.value for e in Endcap), DEFAULT_ENDCAP.value)


async def get_rois(request: Request) -> Response:
    return json_response(await run_rt(_rois_body, *path_of(request), endcap_of(request)))


def _roi_body(store: Store, study: str, series: str, sop: str, number: int,
              endcap: str) -> dict:
    _, frames = _structure_set(store, study, series, sop)
    row = svc.roi_row(store.engine, sop, number)
    roi = svc.load_roi(store.engine, sop, row)
    out = _roi_summary(row, frames)
    out["endcap"] = endcap
    out["volume_cc"] = _volume(store, sop, row, endcap)
    out["geometric_types"] = sorted({c.geometric_type.value for c in roi.contours})
    out["contours"] = [{
        "index": i,
        "geometric_type": c["geometric_type"],
        "number_of_points": c["number_of_points"],
        "points": c["points"],
        "referenced_sop_instance_uid": (c["referenced_sop_instance_uids"] or [None])[0],
    } for i, c in enumerate(contour_to_json(c) for c in roi.contours)]
    return out


async def get_roi(request: Request) -> Response:
    endcap = endcap_of(request)
    number = int_param(request.path_params["number"], "number")
    return json_response(await run_rt(_roi_body, *path_of(request), number, endcap))


def run_lengths(mask: np.ndarray) -> list[int]:
    """[start, length, start, length, ...] of the True runs of ``mask`` in C order."""
    flat = np.concatenate([[False], mask.ravel(), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return np.column_stack([starts, ends - starts]).ravel().tolist()


def _mask(store: Store, study: str, series: str, sop: str, number: int, target: str,
          registration: str | None) -> tuple[np.ndarray, svc.SeriesGrid, dict]:
    _, frames = _structure_set(store, study, series, sop)
    row = svc.roi_row(store.engine, sop, number)
    roi = svc.load_roi(store.engine, sop, row)
    if planar_stack(roi) is None:
        raise Unprocessable(f"ROI {number} has no closed planar contours to rasterise")
    grid = svc.series_grid(store, study, target)
    matrix, used = svc.frame_transform(
        store.engine, registration, svc.roi_frame_of_reference(row, frames),
        grid.frame_of_reference_uid, what=f"ROI {number} on series {target}")
    mask = rasterize_roi(svc.moved_roi(roi, matrix), grid.grid)
    voxel = grid.grid.voxel_volume_mm3
    count = int(np.count_nonzero(mask))
    info = {
        "roi_number": number,
        "roi_name": row.name,
        "series_instance_uid": target,
        "registration": used,
        "grid": grid_json(grid.grid, grid.frame_of_reference_uid),
        "slice_sop_instance_uids": list(grid.sop_instance_uids),
        "voxel_count": count,
        "voxel_volume_mm3": voxel,
        "volume_cc": count * voxel / 1000.0,
        "method": "voxel centres inside the slab model (nearest contour plane within half the "
                  "plane spacing, even-odd rule)",
    }
    return mask, grid, info


async def get_roi_mask(request: Request) -> Response:
    params = query_params(request, {"series", "registration"})
    number = int_param(request.path_params["number"], "number")
    binary = wants_binary(request, default_binary=False)
    target = required_param(params, "series")
    mask, grid, info = await run_rt(
        budgeted(request, mask_cost, _mask, f"rasterising ROI {number}"), *path_of(request),
        number, target, params.get("registration"))
    if binary:
        headers = grid_headers(grid.grid, grid.frame_of_reference_uid)
        headers["X-Voxel-Count"] = str(info["voxel_count"])
        return Response(mask.astype(np.uint8).tobytes(), media_type="application/octet-stream",
                        headers=headers)
    info["shape"] = list(mask.shape)
    info["encoding"] = ("runs: [start, length, ...] of inside voxels, start = flat index in "
                        "C order of [slice, row, column]")
    info["runs"] = await run_in_threadpool(run_lengths, mask)
    return json_response(info)
