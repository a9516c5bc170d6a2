"""HTTP API of the RT extension, mounted under the DICOMweb root by ``create_app``.

Instance level (``/studies/{study}/series/{series}/instances/{instance}/rt/...``): ``rois``,
``rois/{number}``, ``rois/{number}/mask``, ``dose``, ``dose/values``, ``dose/point``,
``dose/dvh``, ``registration``, ``registration/transform``, ``plan``. Study level:
``/studies/{study}/rt`` (the RT graph) and ``/studies/{study}/rt/transform``.

Answers come from the RT index tables (filled at ingest) and, for dose values, from the stored
RT Dose file (decoded grids are cached). JSON bodies are snake_case; arrays go out as
little-endian ``application/octet-stream`` with their geometry in ``X-Grid-*`` headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.errors import BadRequest, NotAcceptable, NotFound, ServiceUnavailable, Unprocessable
from dicomweb.negotiation import parse_accept
from dicomweb.pixels.budget import BudgetBusy, BudgetExceeded
from dicomweb.store.repository import Store

from . import service as svc
from .dose import dose_at_point, maximum, resample_dose
from .dvh import compute_dvh
from .errors import NoRegistrationPath, RtError
from .graph import study_graph
from .grid import Grid
from .registration import transform
from .serialize import contour_to_json, dvh_to_json
from .structures import planar_stack, rasterize_roi

STUDY = "/studies/{study}"
INSTANCE = STUDY + "/series/{series}/instances/{instance}"
DVH_LEVELS = (98.0, 95.0, 50.0, 2.0)
MAX_LEVELS = 100


def routes(store: Store) -> list[Route]:
    return [
        Route(STUDY + "/rt", get_study_graph, methods=["GET"]),
        Route(STUDY + "/rt/transform", get_study_transform, methods=["GET"]),
        Route(INSTANCE + "/rt/rois", get_rois, methods=["GET"]),
        Route(INSTANCE + "/rt/rois/{number}", get_roi, methods=["GET"]),
        Route(INSTANCE + "/rt/rois/{number}/mask", get_roi_mask, methods=["GET"]),
        Route(INSTANCE + "/rt/dose", get_dose, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/values", get_dose_values, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/point", get_dose_point, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/dvh", get_dvh, methods=["GET"]),
        Route(INSTANCE + "/rt/registration", get_registration, methods=["GET"]),
        Route(INSTANCE + "/rt/registration/transform", get_registration_transform,
              methods=["GET"]),
        Route(INSTANCE + "/rt/plan", get_plan, methods=["GET"]),
    ]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    status_code=status_code, media_type="application/json")


def _params(request: Request, allowed: set[str]) -> dict[str, str]:
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


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise BadRequest(f"query parameter {name!r} is required", parameter=name)
    return value


def _float(params: dict[str, str], name: str, *, required: bool = True) -> float | None:
    if name not in params and not required:
        return None
    text = _required(params, name)
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number", parameter=name) from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}={text!r} is not a finite number", parameter=name)
    return value


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not an integer", parameter=name) from None


def _floats(params: dict[str, str], name: str) -> list[float]:
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


def _wants_binary(request: Request, *, default_binary: bool) -> bool:
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


def _path(request: Request) -> tuple[Store, str, str, str]:
    p = request.path_params
    return request.app.state.store, p["study"], p["series"], p["instance"]


async def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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


def _budgeted(request: Request, cost: Callable[..., int], fn: Callable[..., Any],
              what: str) -> Callable[..., Any]:
    """``fn`` run under the pixel memory budget shared by all pixel work, with
    ``cost(*args)`` estimated from the grids' metadata before anything is allocated."""
    budget = request.app.state.pixel_budget

    def run(*args: Any) -> Any:
        with budget.reserve(cost(*args), what):
            return fn(*args)

    return run


def _voxels(grid: Grid | None) -> int:
    if grid is None:
        return 0
    slices, rows, columns = grid.shape
    return slices * rows * columns


def _dose_voxels(store: Store, study: str, series: str, sop: str) -> int:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    return _voxels(svc.dose_grid_object(svc.dose_row(store.engine, loc.sop_instance_uid)).grid)


def _mask_cost(store: Store, study: str, series: str, sop: str, number: int, target: str,
               registration: str | None) -> int:
    return _voxels(svc.series_grid(store, study, target).grid) * RT_BYTES_PER_VOXEL


def _dose_values_cost(store: Store, study: str, series: str, sop: str, target: str | None,
                      registration: str | None) -> int:
    voxels = _dose_voxels(store, study, series, sop)
    if target is not None:
        voxels += _voxels(svc.series_grid(store, study, target).grid)
    return voxels * RT_BYTES_PER_VOXEL


def _dvh_cost(store: Store, study: str, series: str, sop: str, *_: Any) -> int:
    return _dose_voxels(store, study, series, sop) * RT_BYTES_PER_VOXEL


def _vec(v: Any) -> list[float] | None:
    return None if v is None or any(x is None for x in v) else [float(x) for x in v]


# ------------------------------------------------------------------------------------------
# Structure sets
# ------------------------------------------------------------------------------------------
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
        "centroid": _vec((row.centroid_x, row.centroid_y, row.centroid_z)),
        "bounds": None if row.min_x is None else {
            "min": _vec((row.min_x, row.min_y, row.min_z)),
            "max": _vec((row.max_x, row.max_y, row.max_z))},
    }


def _structure_set(store: Store, study: str, series: str, sop: str) -> tuple[Any, list[str]]:
    svc.locate_rt(store, study, series, sop, "RTSTRUCT")
    return svc.structure_set_row(store.engine, sop), svc.structure_set_frames(store.engine, sop)


def _rois_body(store: Store, study: str, series: str, sop: str) -> dict:
    ss, frames = _structure_set(store, study, series, sop)
    return {
        "sop_instance_uid": sop,
        "label": ss.label,
        "name": ss.name,
        "date": ss.date,
        "frame_of_reference_uids": frames,
        "referenced_series_uids": svc.loads(ss.referenced_series_uids) or [],
        "roi_count": ss.roi_count,
        "rois": [_roi_summary(r, frames) for r in svc.roi_rows(store.engine, sop)],
        "warnings": svc.loads(ss.warnings) or [],
    }


async def get_rois(request: Request) -> Response:
    _params(request, set())
    return _json(await _run(_rois_body, *_path(request)))


def _roi_body(store: Store, study: str, series: str, sop: str, number: int) -> dict:
    _, frames = _structure_set(store, study, series, sop)
    row = svc.roi_row(store.engine, sop, number)
    roi = svc.load_roi(store.engine, sop, row)
    out = _roi_summary(row, frames)
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
    _params(request, set())
    number = _int(request.path_params["number"], "number")
    return _json(await _run(_roi_body, *_path(request), number))


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
    params = _params(request, {"series", "registration"})
    number = _int(request.path_params["number"], "number")
    binary = _wants_binary(request, default_binary=False)
    target = _required(params, "series")
    mask, grid, info = await _run(
        _budgeted(request, _mask_cost, _mask, f"rasterising ROI {number}"), *_path(request),
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
    return _json(info)


# ------------------------------------------------------------------------------------------
# Doses
# ------------------------------------------------------------------------------------------
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
            body["maximum"] = {"value": value, "location": _vec(where),
                               "index": [int(i) for i in np.unravel_index(
                                   int(np.argmax(values)), values.shape)]}
    return body


async def get_dose(request: Request) -> Response:
    _params(request, set())
    return _json(await _run(_dose_body, *_path(request)))


def _dose_values(store: Store, study: str, series: str, sop: str, target: str | None,
                 registration: str | None) -> tuple[np.ndarray, Grid, str | None, dict]:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    dose, values = svc.load_dose(store, loc)
    assert dose.grid is not None
    if target is None:
        return values, dose.grid, dose.frame_of_reference_uid, {"units": dose.units}
    grid = svc.series_grid(store, study, target)
    matrix, used = svc.frame_transform(
        store.engine, registration, grid.frame_of_reference_uid, dose.frame_of_reference_uid,
        what=f"dose on series {target}")
    out = resample_dose(dose.grid, values, grid.grid, matrix, fill=np.nan)
    return out, grid.grid, grid.frame_of_reference_uid, {
        "units": dose.units, "series_instance_uid": target, "registration": used,
        "slice_sop_instance_uids": list(grid.sop_instance_uids),
        "outside_grid": "NaN (null in JSON)"}


async def get_dose_values(request: Request) -> Response:
    params = _params(request, {"series", "registration"})
    binary = _wants_binary(request, default_binary=True)
    target = params.get("series")
    if target is not None and not target.strip():
        raise BadRequest("series must be a Series Instance UID", parameter="series")
    values, grid, for_uid, info = await _run(
        _budgeted(request, _dose_values_cost, _dose_values, "resampling this dose"),
        *_path(request), target, params.get("registration"))
    if binary:
        headers = grid_headers(grid, for_uid)
        headers["X-Dose-Units"] = str(info["units"] or "")
        return Response(values.astype("<f4", copy=False).tobytes(),
                        media_type="application/octet-stream", headers=headers)
    body = {**info, "grid": grid_json(grid, for_uid), "shape": list(values.shape),
            "values": values}
    return _json(body)


def _dose_point(store: Store, study: str, series: str, sop: str, xyz: tuple) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    dose, values = svc.load_dose(store, loc)
    value = dose_at_point(dose, values, np.array(xyz))
    return {"point": list(xyz), "frame_of_reference_uid": dose.frame_of_reference_uid,
            "dose": value, "units": dose.units, "inside": value is not None,
            "interpolation": "trilinear"}


async def get_dose_point(request: Request) -> Response:
    params = _params(request, {"x", "y", "z"})
    xyz = tuple(_float(params, k) for k in ("x", "y", "z"))
    return _json(await _run(_dose_point, *_path(request), xyz))


def _dvh(store: Store, study: str, series: str, sop: str, structures: str, number: int,
         levels: list[float], bin_width: float, registration: str | None) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTDOSE")
    ss = svc.structure_set_row(store.engine, structures, parameter="structures")
    frames = svc.structure_set_frames(store.engine, structures)
    row = svc.roi_row(store.engine, structures, number, parameter="roi")
    roi = svc.load_roi(store.engine, structures, row)
    dose, values = svc.load_dose(store, loc)
    matrix, used = svc.frame_transform(
        store.engine, registration, svc.roi_frame_of_reference(row, frames),
        dose.frame_of_reference_uid, what=f"ROI {number} in dose {sop}")
    dvh = compute_dvh(dose, values, svc.moved_roi(roi, matrix), bin_width_gy=bin_width,
                      dose_levels=levels, volume_levels=DVH_LEVELS)
    body = dvh_to_json(dvh)
    body.update({"dose_sop_instance_uid": sop,
                 "structure_set_sop_instance_uid": ss.sop_instance_uid, "registration": used})
    metrics = {f"d{m['volume_pct']:g}_gy": m["dose_gy"] for m in body["dose_at_volume"]}
    metrics.update({"volume_cc": body["total_volume_cc"], "min_gy": body["min_gy"],
                    "mean_gy": body["mean_gy"], "max_gy": body["max_gy"]})
    body["metrics"] = metrics
    return body


async def get_dvh(request: Request) -> Response:
    params = _params(request, {"structures", "roi", "levels", "bin_width", "registration"})
    structures = _required(params, "structures")
    number = _int(_required(params, "roi"), "roi")
    levels = _floats(params, "levels")
    bin_width = _float(params, "bin_width", required=False) or 0.01
    if not 1e-4 <= bin_width <= 10:
        raise BadRequest("bin_width must be between 0.0001 and 10 Gy", parameter="bin_width")
    dvh = _budgeted(request, _dvh_cost, _dvh, f"the DVH of ROI {number}")
    return _json(await _run(dvh, *_path(request), structures, number, levels, bin_width,
                            params.get("registration")))


# ------------------------------------------------------------------------------------------
# Registrations
# ------------------------------------------------------------------------------------------
def _describe(source: str | None, hub: str | None) -> str:
    if source == hub:
        return f"maps points of FoR {hub} (the registration's own) onto itself"
    return f"maps points from FoR {source} to FoR {hub} (the registration's own)"


def _registration_body(store: Store, study: str, series: str, sop: str) -> dict:
    svc.locate_rt(store, study, series, sop, "REG")
    regs = svc.registration_objects(store.engine, [sop])
    if not regs:
        raise Unprocessable(f"Spatial Registration {sop} is stored but its RT content could not "
                            "be indexed")
    reg = regs[0]
    hub = reg.registered_for_uid
    items = []
    for item in reg.items:
        items.append({
            "frame_of_reference_uid": item.source_for_uid,
            "from_frame_of_reference_uid": item.source_for_uid,
            "to_frame_of_reference_uid": hub,
            "matrix": item.matrix.tolist(),
            "matrix_type": "\\".join(str(t) for t in item.matrix_types) or None,
            "identity": bool(np.allclose(item.matrix, np.eye(4))),
            "direction": _describe(item.source_for_uid, hub),
            "deformable": False,
        })
    for ditem in reg.deformable_items:
        items.append({
            "frame_of_reference_uid": ditem.source_for_uid,
            "from_frame_of_reference_uid": ditem.source_for_uid,
            "to_frame_of_reference_uid": hub,
            "matrix": ditem.rigid_part.tolist(),
            "matrix_type": "DEFORMABLE",
            "identity": bool(np.allclose(ditem.rigid_part, np.eye(4))),
            "direction": _describe(ditem.source_for_uid, hub) + (
                "; its deformation grid is NOT applied (not used by transform)"
                if ditem.has_grid else "; rigid part (post · pre matrices), no grid"),
            "deformable": True,
            "deformable_grid": ditem.has_grid,
        })
    return {
        "sop_instance_uid": sop,
        "registered_frame_of_reference_uid": hub,
        "deformable": reg.deformable,
        "convention": "p_to = matrix @ [x, y, z, 1] with p in from_frame_of_reference_uid "
                      "(PS3.3 C.20.2.1.1); matrices are row-major",
        "frames_of_reference": items,
        "warnings": reg.warnings,
    }


async def get_registration(request: Request) -> Response:
    _params(request, set())
    return _json(await _run(_registration_body, *_path(request)))


def _transform(regs: list, from_for: str, to_for: str) -> dict:
    known = {f for r in regs for f in r.frame_of_reference_uids}
    for name, uid in (("from", from_for), ("to", to_for)):
        if uid not in known:
            raise NotFound(f"Frame of Reference {uid} is not registered by "
                           f"{'this registration' if len(regs) == 1 else 'any registration'}",
                           parameter=name)
    try:
        matrix = transform(regs, from_for, to_for)
    except NoRegistrationPath as exc:
        raise Unprocessable(f"{exc} (deformable items with a grid are not composed)") from exc
    return {"from_frame_of_reference_uid": from_for, "to_frame_of_reference_uid": to_for,
            "matrix": matrix.tolist(),
            "direction": f"maps points from FoR {from_for} to FoR {to_for}",
            "registrations": [r.sop_instance_uid for r in regs]}


def _registration_transform(store: Store, study: str, series: str, sop: str, from_for: str,
                            to_for: str) -> dict:
    svc.locate_rt(store, study, series, sop, "REG")
    regs = svc.registration_objects(store.engine, [sop])
    if not regs:
        raise Unprocessable(f"Spatial Registration {sop} has no indexed content")
    return _transform(regs, from_for, to_for)


async def get_registration_transform(request: Request) -> Response:
    params = _params(request, {"from", "to"})
    from_for, to_for = _required(params, "from"), _required(params, "to")
    return _json(await _run(_registration_transform, *_path(request), from_for, to_for))


def _study_transform(store: Store, study: str, from_for: str, to_for: str) -> dict:
    uids = svc.study_registration_uids(store.engine, study)
    regs = svc.registration_objects(store.engine, uids)
    if not regs:
        store.locate(study)  # 404 for an unknown study
        raise NotFound(f"study {study} has no spatial registration")
    return _transform(regs, from_for, to_for)


async def get_study_transform(request: Request) -> Response:
    params = _params(request, {"from", "to"})
    from_for, to_for = _required(params, "from"), _required(params, "to")
    return _json(await _run(_study_transform, request.app.state.store,
                            request.path_params["study"], from_for, to_for))


# ------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------
def _plan_body(store: Store, study: str, series: str, sop: str, control_points: bool) -> dict:
    from sqlmodel import Session, select

    from .tables import RtBeamRow, RtControlPointRow, RtFractionGroupRow, RtPlanRow

    svc.locate_rt(store, study, series, sop, "RTPLAN")
    with Session(store.engine) as session:
        plan = session.exec(select(RtPlanRow).where(RtPlanRow.sop_instance_uid == sop)).first()
        if plan is None:
            raise Unprocessable(f"RT Plan {sop} is stored but its content could not be indexed")
        groups = session.exec(select(RtFractionGroupRow).where(
            RtFractionGroupRow.sop_instance_uid == sop).order_by(RtFractionGroupRow.id)).all()
        beams = session.exec(select(RtBeamRow).where(RtBeamRow.sop_instance_uid == sop)
                             .order_by(RtBeamRow.id)).all()
        cps = session.exec(select(RtControlPointRow).where(
            RtControlPointRow.sop_instance_uid == sop).order_by(RtControlPointRow.id)).all() \
            if control_points else []
    by_beam: dict[int | None, list] = {}
    for cp in cps:
        by_beam.setdefault(cp.beam_number, []).append({
            "index": cp.control_point_index,
            "cumulative_meterset_weight": cp.cumulative_meterset_weight,
            "gantry_angle": cp.gantry_angle,
            "gantry_rotation_direction": cp.gantry_rotation_direction,
            "collimator_angle": cp.collimator_angle,
            "couch_angle": cp.couch_angle,
            "jaw_x": None if cp.jaw_x1 is None else [cp.jaw_x1, cp.jaw_x2],
            "jaw_y": None if cp.jaw_y1 is None else [cp.jaw_y1, cp.jaw_y2],
            "mlc_positions": svc.loads(cp.mlc_positions) or {},
        })
    beam_list = []
    for b in beams:
        entry = {
            "number": b.beam_number, "name": b.name, "beam_type": b.beam_type,
            "radiation_type": b.radiation_type, "machine": b.machine, "energy": b.energy,
            "source_axis_distance": b.source_axis_distance, "isocenter": svc.loads(b.isocenter),
            "meterset": b.meterset, "number_of_control_points": b.number_of_control_points,
            "final_cumulative_meterset_weight": b.final_cumulative_meterset_weight,
            "beam_limiting_devices": svc.loads(b.beam_limiting_devices) or [],
        }
        if control_points:
            entry["control_points"] = by_beam.get(b.beam_number, [])
        beam_list.append(entry)
    return {
        "sop_instance_uid": sop, "label": plan.label, "name": plan.name, "date": plan.date,
        "geometry": plan.geometry, "intent": plan.intent, "ion": plan.ion,
        "referenced_structure_set_uid": plan.referenced_structure_set_uid,
        "prescription_dose": plan.prescription_dose,
        "dose_references": svc.loads(plan.dose_references) or [],
        "fraction_groups": [{"number": g.fraction_group_number,
                             "fractions_planned": g.fractions_planned,
                             "beams": svc.loads(g.referenced_beams) or []} for g in groups],
        "beams": beam_list,
        "warnings": svc.loads(plan.warnings) or [],
    }


async def get_plan(request: Request) -> Response:
    params = _params(request, {"control_points"})
    flag = params.get("control_points", "true").lower()
    if flag not in ("true", "false"):
        raise BadRequest("control_points must be true or false", parameter="control_points")
    return _json(await _run(_plan_body, *_path(request), flag == "true"))


# ------------------------------------------------------------------------------------------
# Study graph
# ------------------------------------------------------------------------------------------
async def get_study_graph(request: Request) -> Response:
    _params(request, set())
    return _json(await _run(study_graph, request.app.state.store.engine,
                            request.path_params["study"]))


__all__ = ["routes", "grid_json", "grid_headers", "run_lengths"]
