"""Dose sums: ``/studies/{s}/rt/dose/sum?doses=UID1,UID2…`` and its DVH
``/studies/{s}/rt/dose/sum/dvh?doses=…&structures=SS&roi=N[,M…]``.

The doses (RT Dose SOP Instance UIDs of the study) are resampled onto the first one's grid
and added (:mod:`..dosesum`); a dose in another Frame of Reference than the first needs
``registration={REG}`` relating the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, NotFound, Unprocessable
from dicomweb.store.repository import Store

from .. import service as svc
from ..dose import DoseGrid, maximum
from ..dosesum import SumPart, check_summable, sum_onto, summation_type_of_sum
from ..interpolation import DoseSampler
from .common import (
    RT_BYTES_PER_VOXEL,
    budgeted,
    grid_headers,
    grid_json,
    grid_voxels,
    int_list,
    json_response,
    negotiate,
    query_params,
    required_param,
    run_rt,
    vec,
    wants_binary,
)
from .dvh import DVH_PARAMETERS, MAX_ROIS, MEDIA, dvh_of_roi, dvh_options, dvh_response

MAX_DOSES = 20


def dose_uids(params: dict[str, str]) -> list[str]:
    uids = [u.strip() for u in required_param(params, "doses").split(",")]
    if any(not u for u in uids):
        raise BadRequest("doses: an empty UID in the list", parameter="doses")
    if len(set(uids)) != len(uids):
        raise BadRequest("doses: a dose is listed twice (it would be counted twice)",
                         parameter="doses")
    if len(uids) > MAX_DOSES:
        raise BadRequest(f"doses: at most {MAX_DOSES}", parameter="doses")
    return uids


def _dose_rows(store: Store, study: str, uids: list[str]) -> list[DoseGrid]:
    out = []
    for uid in uids:
        loc = svc.instance_by_sop(store, uid, "RTDOSE", parameter="doses")
        if loc.study_instance_uid != study:
            raise NotFound(f"doses: RT Dose {uid} is not in study {study}", parameter="doses")
        dose = svc.dose_grid_object(svc.dose_row(store.engine, uid))
        if dose.grid is None:
            raise Unprocessable(f"RT Dose {uid} has no usable dose grid")
        out.append(dose)
    return out


def sum_cost(store: Store, study: str, uids: list[str], *_: Any) -> int:
    grids = [d.grid for d in _dose_rows(store, study, uids)]
    return (sum(grid_voxels(g) for g in grids) + 2 * grid_voxels(grids[0])) * RT_BYTES_PER_VOXEL


def summed(store: Store, study: str, uids: list[str], registration: str | None
           ) -> tuple[DoseGrid, np.ndarray, dict]:
    """The sum as a dose on the first dose's grid, and what it was made of."""
    doses = _dose_rows(store, study, uids)
    check_summable(doses)
    first = doses[0]
    assert first.grid is not None
    parts, used = [], []
    for dose in doses:
        loc = svc.instance_by_sop(store, dose.sop_instance_uid or "", "RTDOSE",
                                  parameter="doses")
        _, values = svc.load_dose(store, loc)
        mapper = svc.deformation_mapper(store, registration, first.frame_of_reference_uid,
                                        dose.frame_of_reference_uid)
        if mapper is not None:  # through the deformation grid
            matrix, reg = np.eye(4), registration
        else:
            matrix, reg = svc.frame_transform(
                store.engine, registration, first.frame_of_reference_uid,
                dose.frame_of_reference_uid, what=f"dose {dose.sop_instance_uid} in the sum")
        parts.append(SumPart(dose, values, matrix, mapper))
        used.append(reg)
    total, outside = sum_onto(first.grid, parts)
    result = DoseGrid(None, first.grid, first.frame_of_reference_uid, first.units,
                      first.dose_type, summation_type_of_sum(doses), 1.0,
                      sorted({p for d in doses for p in d.referenced_plan_uids}),
                      has_pixel_data=True)
    info = {
        "doses": [{"sop_instance_uid": d.sop_instance_uid,
                   "frame_of_reference_uid": d.frame_of_reference_uid,
                   "summation_type": d.summation_type, "scaling": d.scaling,
                   "referenced_plan_uid": d.referenced_plan_uids[0]
                   if d.referenced_plan_uids else None,
                   "registration": reg, "outside_fraction": round(out, 6)}
                  for d, reg, out in zip(doses, used, outside, strict=True)],
        "units": getattr(first.units, "value", first.units),
        "dose_type": getattr(first.dose_type, "value", first.dose_type),
        "summation_type": result.summation_type,
        "grid_of": first.sop_instance_uid,
        "outside_grid": "0 (a dose contributes nothing outside its grid)",
    }
    return result, total, info


def _sum_body(store: Store, study: str, uids: list[str], registration: str | None,
              binary: bool) -> tuple[DoseGrid, np.ndarray, dict]:
    dose, total, info = summed(store, study, uids, registration)
    assert dose.grid is not None
    value, where = maximum(dose.grid, total)
    info["maximum"] = {"value": value, "location": vec(where)}
    info["grid"] = grid_json(dose.grid, dose.frame_of_reference_uid)
    if not binary:
        info["shape"] = list(total.shape)
        info["values"] = total
    return dose, total, info


async def get_dose_sum(request: Request) -> Response:
    params = query_params(request, {"doses", "registration"})
    binary = wants_binary(request, default_binary=False)
    uids = dose_uids(params)
    store, study = request.app.state.store, request.path_params["study"]
    dose, total, info = await run_rt(
        budgeted(request, sum_cost, _sum_body, "summing these doses"), store, study, uids,
        params.get("registration"), binary)
    if binary:
        assert dose.grid is not None
        headers = grid_headers(dose.grid, dose.frame_of_reference_uid)
        headers["X-Dose-Units"] = str(info["units"] or "")
        headers["X-Dose-Summation-Type"] = info["summation_type"]
        return Response(total.astype("<f4", copy=False).tobytes(),
                        media_type="application/octet-stream", headers=headers)
    return json_response(info)


def _sum_dvhs(store: Store, study: str, uids: list[str], structures: str, numbers: list[int],
              options: dict[str, Any], registration: str | None) -> list[dict]:
    dose, total, info = summed(store, study, uids, registration)
    sampler = DoseSampler(total)
    out = []
    for number in numbers:
        body, _ = dvh_of_roi(store, dose, sampler, structures, number, options, registration,
                             "the dose sum")
        body["dose_sum"] = {k: info[k] for k in ("doses", "summation_type", "grid_of")}
        out.append(body)
    return out


async def get_dose_sum_dvh(request: Request) -> Response:
    params = query_params(request, DVH_PARAMETERS | {"doses"})
    media_type = negotiate(request, MEDIA)
    uids = dose_uids(params)
    structures = required_param(params, "structures")
    numbers = int_list(params, "roi", maximum=MAX_ROIS)
    options = dvh_options(params)
    volume_unit = params.get("volume", "pct")
    if volume_unit not in ("pct", "cc"):
        raise BadRequest("volume: expected one of pct, cc", parameter="volume")
    store, study = request.app.state.store, request.path_params["study"]
    bodies = await run_rt(budgeted(request, sum_cost, _sum_dvhs, "the DVH of a dose sum"),
                          store, study, uids, structures, numbers, options,
                          params.get("registration"))
    return dvh_response(request, bodies, media_type, volume_unit)
