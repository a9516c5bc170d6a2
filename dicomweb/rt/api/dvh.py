"""The DVH resource: ``…/instances/{dose}/rt/dose/dvh?structures=SS&roi=N[,M…]``.

JSON (default): one ROI's DVH body, or ``{"dvhs": [...]}`` for several; ``image/png`` or
``image/svg+xml``: the cumulative DVHs drawn in their ROI colours (:mod:`..dvhplot`), volume
in % (``volume=pct``, default) or cm³ (``volume=cc``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest
from dicomweb.store.repository import Store

from .. import dvhplot
from .. import service as svc
from ..dose import DoseGrid
from ..dvh import DEFAULT_INTERPOLATION, compute_dvh
from ..interpolation import DoseSampler, Interpolation
from ..serialize import dvh_to_json
from ..slabs import DEFAULT_ENDCAP, Endcap
from .common import (
    budgeted,
    choice,
    dvh_cost,
    float_param,
    floats_param,
    int_list,
    json_response,
    negotiate,
    path_of,
    query_params,
    required_param,
    run_rt,
)

DVH_LEVELS = (98.0, 95.0, 50.0, 2.0)
MAX_ROIS = 20
MEDIA = ("application/json", "image/png", "image/svg+xml")
ENDCAPS = tuple(e.value for e in Endcap)
INTERPOLATIONS = tuple(i.value for i in Interpolation)


def dvh_of_roi(store: Store, dose: DoseGrid, sampler: DoseSampler, structures: str,
               number: int, options: dict[str, Any], registration: str | None,
               what: str) -> tuple[dict, Any]:
    """The DVH body of ROI ``number`` of structure set ``structures`` in a dose (mapped into
    the dose's Frame of Reference through ``registration`` when they differ)."""
    svc.structure_set_row(store.engine, structures, parameter="structures")
    frames = svc.structure_set_frames(store.engine, structures)
    row = svc.roi_row(store.engine, structures, number, parameter="roi")
    roi = svc.load_roi(store.engine, structures, row)
    matrix, used = svc.frame_transform(
        store.engine, registration, svc.roi_frame_of_reference(row, frames),
        dose.frame_of_reference_uid, what=f"ROI {number} in {what}")
    dvh = compute_dvh(dose, sampler, svc.moved_roi(roi, matrix),
                      bin_width_gy=options["bin_width"],
                      dose_levels=options["levels"], volume_levels=DVH_LEVELS,
                      endcap=options["endcap"], interpolation=options["interpolation"])
    body = dvh_to_json(dvh)
    body.update({"structure_set_sop_instance_uid": structures, "registration": used,
                 "roi_display_color": list(roi.display_color) if roi.display_color else None,
                 "method": {"endcap": options["endcap"],
                            "interpolation": options["interpolation"]}})
    metrics = {f"d{m['volume_pct']:g}_gy": m["dose_gy"] for m in body["dose_at_volume"]}
    metrics.update({"volume_cc": body["total_volume_cc"], "min_gy": body["min_gy"],
                    "mean_gy": body["mean_gy"], "max_gy": body["max_gy"]})
    body["metrics"] = metrics
    return body, roi


def _dvhs(store: Store, study: str, series: str, sop: str, structures: str, numbers: list[int],
          options: dict[str, Any], registration: str | None) -> list[dict]:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    dose, sampler = svc.load_dose_sampler(store, loc)
    out = []
    for number in numbers:
        body, _ = dvh_of_roi(store, dose, sampler, structures, number, options, registration,
                             f"dose {sop}")
        body["dose_sop_instance_uid"] = sop
        out.append(body)
    svc.DOSE_CACHE.trim()  # the interpolation terms may have been derived just now
    return out


def dvh_options(params: dict[str, str]) -> dict[str, Any]:
    """The DVH method parameters shared by every DVH resource."""
    bin_width = float_param(params, "bin_width", required=False) or 0.01
    if not 1e-4 <= bin_width <= 10:
        raise BadRequest("bin_width must be between 0.0001 and 10 Gy", parameter="bin_width")
    return {"levels": floats_param(params, "levels"), "bin_width": bin_width,
            "endcap": choice(params, "endcap", ENDCAPS, DEFAULT_ENDCAP.value),
            "interpolation": choice(params, "interpolation", INTERPOLATIONS,
                                    DEFAULT_INTERPOLATION.value)}


DVH_PARAMETERS = {"structures", "roi", "levels", "bin_width", "registration", "endcap",
                  "interpolation", "volume"}


def dvh_response(request: Request, bodies: list[dict], media_type: str,
                 volume_unit: str) -> Response:
    if media_type == "application/json":
        return json_response(bodies[0] if len(bodies) == 1 else {"dvhs": bodies})
    curves = [dvhplot.Curve(
        label=f"{b['roi_number']} {b['roi_name'] or ''}".strip(),
        colour=dvhplot.colour_of(i, tuple(b["roi_display_color"])
                                 if b["roi_display_color"] else None),
        dose_gy=_array(b["dose_gy"]),
        volume=_array(b["volume_pct"] if volume_unit == "pct" else b["volume_cc"]))
        for i, b in enumerate(bodies)]
    if media_type == "image/png":
        return Response(dvhplot.to_png(curves, volume_unit), media_type="image/png")
    return Response(dvhplot.to_svg(curves, volume_unit), media_type="image/svg+xml")


def _array(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


async def get_dvh(request: Request) -> Response:
    params = query_params(request, DVH_PARAMETERS)
    media_type = negotiate(request, MEDIA)
    structures = required_param(params, "structures")
    numbers = int_list(params, "roi", maximum=MAX_ROIS)
    options = dvh_options(params)
    volume_unit = choice(params, "volume", ("pct", "cc"), "pct")
    run = budgeted(request, dvh_cost, _dvhs, f"the DVH of ROI {', '.join(map(str, numbers))}")
    bodies = await run_rt(run, *path_of(request), structures, numbers, options,
                          params.get("registration"))
    return dvh_response(request, bodies, media_type, volume_unit)
