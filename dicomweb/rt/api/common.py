"""Shared pieces of the RT HTTP API: query parameters, media types, grid headers, running
library code off the event loop under the pixel memory budget, typed errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, NotAcceptable, ServiceUnavailable, Unprocessable
from dicomweb.negotiation import parse_accept
from dicomweb.pixels.budget import BudgetBusy, BudgetExceeded
from dicomweb.store.repository import Store

from .. import service as svc
from ..errors import NoRegistrationPath, RtError
from ..grid import Grid

STUDY = "/studies/{study}"
INSTANCE = STUDY + "/series/{series}/instances/{instance}"
MAX_LEVELS = 100


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    status_code=status_code, media_type="application/json")


def query_params(request: Request, allowed: set[str]) -> dict[str, str]:
    """Query parameters; 400 naming any unknown or repeated one."""
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed | {"accept"}:
            raise BadRequest(f"unknown query parameter {name!r}; allowed: "
                             f"{', '.join(sorted(allowed)) or 'none'}", parameter=name)
        if name in out:
            raise BadRequest(f"query parameter {name!r} is given more than once",
                             parameter=name)
        out[name] = value
    return out


def required_param(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise BadRequest(f"query parameter {name!r} is required", parameter=name)
    return value


def float_param(params: dict[str, str], name: str, *, required: bool = True) -> float | None:
    if name not in params and not required:
        return None
    text = required_param(params, name)
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number", parameter=name) from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}={text!r} is not a finite number", parameter=name)
    return value


def int_param(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not an integer", parameter=name) from None


def floats_param(params: dict[str, str], name: str) -> list[float]:
    text = params.get(name)
    if text is None:
        return []
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise BadRequest(f"{name}: {item!r} is not a number (expected a comma-separated "
                             "list such as 20,40,60)", parameter=name) from None
        if not math.isfinite(value) or value < 0:
            raise BadRequest(f"{name}: {item!r} must be a finite number >= 0", parameter=name)
        values.append(value)
    if len(values) > MAX_LEVELS:
        raise BadRequest(f"{name}: at most {MAX_LEVELS} values", parameter=name)
    return values


def wants_binary(request: Request, *, default_binary: bool) -> bool:
    """Accept (or ?accept=) negotiation between application/octet-stream and JSON."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    for media in parse_accept(header):
        if media.part_type in ("*/*", "*", "application/*"):
            return default_binary
        if media.matches("application/octet-stream"):
            return True
        if media.matches("application/json"):
            return False
    raise NotAcceptable("this resource is available as application/json or "
                        "application/octet-stream")


def negotiate(request: Request, offered: tuple[str, ...]) -> str:
    """The first of ``offered`` media types that Accept (or ``?accept=``) allows, in the
    client's order of preference; ``offered[0]`` for wildcards; 406 naming them otherwise."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    for media in parse_accept(header):
        if media.part_type in ("*/*", "*"):
            return offered[0]
        for media_type in offered:
            if media.matches(media_type):
                return media_type
    raise NotAcceptable(f"this resource is available as {', '.join(offered)}")


def choice(params: dict[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    """A parameter that takes one of ``allowed`` words; 400 listing them otherwise."""
    value = params.get(name, default).strip().lower()
    if value not in allowed:
        raise BadRequest(f"{name}={params.get(name)!r}: expected one of {', '.join(allowed)}",
                         parameter=name)
    return value


def int_list(params: dict[str, str], name: str, *, maximum: int) -> list[int]:
    """A required comma-separated list of integers (``roi=1,2,3``), at most ``maximum``."""
    text = required_param(params, name)
    values = [int_param(item.strip(), name) for item in text.split(",")]
    if len(values) > maximum:
        raise BadRequest(f"{name}: at most {maximum} values", parameter=name)
    return list(dict.fromkeys(values))


def grid_json(grid: Grid, frame_of_reference_uid: str | None) -> dict:
    """Geometry of a voxel grid: voxel (k, r, c) centre is ``origin + c·spacing[0]·
    row_direction + r·spacing[1]·column_direction + slice_offsets[k]·normal``."""
    return {
        "frame_of_reference_uid": frame_of_reference_uid,
        "origin": [float(v) for v in grid.origin],
        "spacing": [grid.column_spacing, grid.row_spacing, grid.slice_spacing],
        "size": [grid.columns, grid.rows, grid.shape[0]],
        "direction": [[float(v) for v in a] for a in (grid.row_direction,
                                                         grid.column_direction, grid.normal)],
        "slice_offsets": [float(v) for v in grid.slice_offsets],
        "uniform": grid.is_uniform,
        "array_order": "[slice, row, column]",
    }


def _csv(values: Any) -> str:
    return ",".join(f"{float(v):.12g}" for v in values)


def grid_headers(grid: Grid, frame_of_reference_uid: str | None) -> dict[str, str]:
    return {
        "X-Grid-Shape": ",".join(str(n) for n in grid.shape),
        "X-Grid-Origin": _csv(grid.origin),
        "X-Grid-Row-Direction": _csv(grid.row_direction),
        "X-Grid-Column-Direction": _csv(grid.column_direction),
        "X-Grid-Normal": _csv(grid.normal),
        "X-Grid-Pixel-Spacing": _csv((grid.row_spacing, grid.column_spacing)),
        "X-Grid-Slice-Offsets": _csv(grid.slice_offsets),
        "X-Frame-Of-Reference-UID": frame_of_reference_uid or "",
    }


def path_of(request: Request) -> tuple[Store, str, str, str]:
    p = request.path_params
    return request.app.state.store, p["study"], p["series"], p["instance"]


async def run_rt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except NoRegistrationPath as exc:
        raise Unprocessable(str(exc)) from exc
    except RtError as exc:  # the reason in words; the class name is no client's business
        raise Unprocessable(str(exc)) from exc
    except BudgetBusy as exc:
        raise ServiceUnavailable(str(exc), retry_after_s=exc.retry_after_s) from None
    except BudgetExceeded as exc:
        raise Unprocessable(str(exc)) from None


#: Bytes per voxel that rasterising, resampling and DVHs hold at most: voxel centres (3
#: float64), values and masks, interpolation weights.
RT_BYTES_PER_VOXEL = 64


def budgeted(request: Request, cost: Callable[..., int], fn: Callable[..., Any],
              what: str) -> Callable[..., Any]:
    """``fn`` run under the pixel memory budget shared by all pixel work, with
    ``cost(*args)`` estimated from the grids' metadata before anything is allocated."""
    budget = request.app.state.pixel_budget

    def run(*args: Any) -> Any:
        with budget.reserve(cost(*args), what):
            return fn(*args)

    return run


def grid_voxels(grid: Grid | None) -> int:
    if grid is None:
        return 0
    slices, rows, columns = grid.shape
    return slices * rows * columns


def dose_voxels(store: Store, study: str, series: str, sop: str) -> int:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    return grid_voxels(svc.dose_grid_object(svc.dose_row(store.engine, loc.sop_instance_uid)).grid)


def mask_cost(store: Store, study: str, series: str, sop: str, number: int, target: str,
               registration: str | None) -> int:
    return grid_voxels(svc.series_grid(store, study, target).grid) * RT_BYTES_PER_VOXEL


def dose_values_cost(store: Store, study: str, series: str, sop: str, target: str | None,
                     registration: str | None) -> int:
    count = dose_voxels(store, study, series, sop)
    if target is not None:
        count += grid_voxels(svc.series_grid(store, study, target).grid)
    return count * RT_BYTES_PER_VOXEL


def dvh_cost(store: Store, study: str, series: str, sop: str, *_: Any) -> int:
    return dose_voxels(store, study, series, sop) * RT_BYTES_PER_VOXEL


def vec(v: Any) -> list[float] | None:
    return None if v is None or any(x is None for x in v) else [float(x) for x in v]
