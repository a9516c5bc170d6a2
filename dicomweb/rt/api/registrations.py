"""Spatial Registration resources: ``…/rt/registration``, ``…/rt/registration/transform``,
``/studies/{s}/rt/transform``."""

from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.store.repository import Store

from .. import service as svc
from ..errors import NoRegistrationPath
from ..registration import apply, transform
from .common import float_param, json_response, path_of, query_params, required_param, run_rt
from .fiducials import registration_residuals


def _describe(source: str | None, hub: str | None) -> str:
    if source == hub:
        return f"maps points of FoR {hub} (the registration's own) onto itself"
    return f"maps points from FoR {source} to FoR {hub} (the registration's own)"


def _registration_body(store: Store, study: str, series: str, sop: str) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "REG")
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
            "from_frame_of_reference_uid": hub,
            "to_frame_of_reference_uid": ditem.source_for_uid,
            "matrix": ditem.rigid_part.tolist(),
            "matrix_type": "DEFORMABLE",
            "identity": bool(np.allclose(ditem.rigid_part, np.eye(4))),
            "direction": f"maps points of FoR {hub} (the registration's own) to FoR "
                         f"{ditem.source_for_uid} (PS3.3 C.20.3.1.1)" + (
                "; post · pre matrices only: its deformation grid applies point by point "
                "(transform with x, y, z; dose values through it)"
                if ditem.has_grid else "; post · pre matrices, no grid"),
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
        "fiducial_residuals": registration_residuals(store, loc, reg),
        "warnings": reg.warnings,
    }


async def get_registration(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_registration_body, *path_of(request)))


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
                            to_for: str, point: tuple[float, ...] | None) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "REG")
    regs = svc.registration_objects(store.engine, [sop])
    if not regs:
        raise Unprocessable(f"Spatial Registration {sop} has no indexed content")
    mapper = svc.deformation_mapper(store, sop, from_for, to_for)
    if mapper is not None:
        if point is None:
            raise Unprocessable(f"registration {sop} relates {from_for} to {to_for} through a "
                                "deformation grid, which no matrix represents: give x, y, z to "
                                "map a point", parameter="x")
        mapped = mapper(np.array([point]))[0]
        return {"from_frame_of_reference_uid": from_for, "to_frame_of_reference_uid": to_for,
                "point": list(point), "deformable": True,
                "mapped": None if np.isnan(mapped).any() else mapped.tolist(),
                "inside_grid": not bool(np.isnan(mapped).any()),
                "direction": f"maps points from FoR {from_for} to FoR {to_for} through the "
                             "deformation grid (PS3.3 C.20.3.1.1)",
                "registrations": [sop], "fiducial_residuals": []}
    body = _transform(regs, from_for, to_for)
    if point is not None:
        body["point"] = list(point)
        body["mapped"] = apply(np.array(body["matrix"]), np.array(point)).tolist()
        body["deformable"] = False
    body["fiducial_residuals"] = [r for r in registration_residuals(store, loc, regs[0])
                                  if {r["from_frame_of_reference_uid"],
                                      r["to_frame_of_reference_uid"]} == {from_for, to_for}]
    return body


async def get_registration_transform(request: Request) -> Response:
    params = query_params(request, {"from", "to", "x", "y", "z"})
    from_for, to_for = required_param(params, "from"), required_param(params, "to")
    point = None
    if any(k in params for k in ("x", "y", "z")):
        point = tuple(float_param(params, k) for k in ("x", "y", "z"))
    return json_response(await run_rt(_registration_transform, *path_of(request), from_for,
                                      to_for, point))


def _study_transform(store: Store, study: str, from_for: str, to_for: str) -> dict:
    uids = svc.study_registration_uids(store.engine, study)
    regs = svc.registration_objects(store.engine, uids)
    if not regs:
        store.locate(study)  # 404 for an unknown study
        raise NotFound(f"study {study} has no spatial registration")
    return _transform(regs, from_for, to_for)


async def get_study_transform(request: Request) -> Response:
    params = query_params(request, {"from", "to"})
    from_for, to_for = required_param(params, "from"), required_param(params, "to")
    return json_response(await run_rt(_study_transform, request.app.state.store,
                            request.path_params["study"], from_for, to_for))
