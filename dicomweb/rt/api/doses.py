"""RT Dose resources: ``…/rt/dose``, ``…/rt/dose/values``, ``…/rt/dose/point``."""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, Unprocessable
from dicomweb.store.repository import Store

from .. import service as svc
from ..deformable import resample_through
from ..dose import dose_at_point, maximum, resample_dose
from ..grid import Grid
from .common import (
    budgeted,
    dose_values_cost,
    float_param,
    grid_headers,
    grid_json,
    json_response,
    path_of,
    query_params,
    run_rt,
    vec,
    wants_binary,
)

DVH_LEVELS = (98.0, 95.0, 50.0, 2.0)


def _dose_body(store: Store, study: str, series: str, sop: str) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    row = svc.dose_row(store.engine, sop)
    dose = svc.dose_grid_object(row)
    body: dict[str, Any] = {
        "sop_instance_uid": sop,
        "frame_of_reference_uid": row.frame_of_reference_uid,
        "units": row.units,
        "dose_type": row.dose_type,
        "summation_type": row.summation_type,
        "scaling": row.scaling,
        "referenced_plan_uid": row.referenced_plan_uid,
        "grid": None if dose.grid is None else grid_json(dose.grid, row.frame_of_reference_uid),
        "maximum": None,
        "warnings": svc.loads(row.warnings) or [],
    }
    if dose.grid is not None:
        try:
            dose, values = svc.load_dose(store, loc)
        except Unprocessable as exc:
            body["warnings"].append(exc.message)
        else:
            value, where = maximum(dose.grid, values)
            body["maximum"] = {"value": value, "location": vec(where),
                               "index": [int(i) for i in np.unravel_index(
                                   int(np.argmax(values)), values.shape)]}
    return body


async def get_dose(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_dose_body, *path_of(request)))


def _dose_values(store: Store, study: str, series: str, sop: str, target: str | None,
                 registration: str | None) -> tuple[np.ndarray, Grid, str | None, dict]:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    dose, values = svc.load_dose(store, loc)
    assert dose.grid is not None
    if target is None:
        return values, dose.grid, dose.frame_of_reference_uid, {"units": dose.units}
    grid = svc.series_grid(store, study, target)
    mapper = svc.deformation_mapper(store, registration, grid.frame_of_reference_uid,
                                    dose.frame_of_reference_uid)
    if mapper is not None:  # through the deformation grid, voxel by voxel
        out, used, method = resample_through(dose.grid, values, grid.grid, mapper), \
            registration, "deformable"
    else:
        matrix, used = svc.frame_transform(
            store.engine, registration, grid.frame_of_reference_uid,
            dose.frame_of_reference_uid, what=f"dose on series {target}")
        out, method = resample_dose(dose.grid, values, grid.grid, matrix, fill=np.nan), "matrix"
    return out, grid.grid, grid.frame_of_reference_uid, {
        "units": dose.units, "series_instance_uid": target, "registration": used,
        "mapping": method,
        "slice_sop_instance_uids": list(grid.sop_instance_uids),
        "outside_grid": "NaN (null in JSON)"}


async def get_dose_values(request: Request) -> Response:
    params = query_params(request, {"series", "registration"})
    binary = wants_binary(request, default_binary=True)
    target = params.get("series")
    if target is not None and not target.strip():
        raise BadRequest("series must be a Series Instance UID", parameter="series")
    values, grid, for_uid, info = await run_rt(
        budgeted(request, dose_values_cost, _dose_values, "resampling this dose"),
        *path_of(request), target, params.get("registration"))
    if binary:
        headers = grid_headers(grid, for_uid)
        headers["X-Dose-Units"] = str(info["units"] or "")
        if "mapping" in info:
            headers["X-Registration-Mapping"] = info["mapping"]
        return Response(values.astype("<f4", copy=False).tobytes(),
                        media_type="application/octet-stream", headers=headers)
    body = {**info, "grid": grid_json(grid, for_uid), "shape": list(values.shape),
            "values": values}
    return json_response(body)


def _dose_point(store: Store, study: str, series: str, sop: str, xyz: tuple) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    dose, values = svc.load_dose(store, loc)
    value = dose_at_point(dose, values, np.array(xyz))
    return {"point": list(xyz), "frame_of_reference_uid": dose.frame_of_reference_uid,
            "dose": value, "units": dose.units, "inside": value is not None,
            "interpolation": "trilinear"}


async def get_dose_point(request: Request) -> Response:
    params = query_params(request, {"x", "y", "z"})
    xyz = tuple(float_param(params, k) for k in ("x", "y", "z"))
    return json_response(await run_rt(_dose_point, *path_of(request), xyz))
