"""Spatial Fiducials: ``…/instances/{i}/rt/fiducials``, and the fiducial residuals the
registration resources report (:func:`registration_residuals`).

FIDUCIALS instances are small: they are read from the stored file when asked for, not indexed.
"""

from __future__ import annotations

from pydicom import dcmread
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import NotFound
from dicomweb.store.repository import InstanceLocation, Store

from .. import service as svc
from ..fiducials import Fiducial, FiducialSets, parse_fiducials, residuals, used_fiducials
from ..registration import Registration
from .common import json_response, path_of, query_params, run_rt


def _fiducial_json(f: Fiducial) -> dict:
    return {"identifier": f.identifier, "fiducial_uid": f.uid, "shape_type": f.shape_type,
            "description": f.description, "frame_of_reference_uid": f.frame_of_reference_uid,
            "points": None if f.points is None else f.points.tolist(),
            "centre": None if f.centre is None else f.centre.tolist(),
            "image_points": f.image_points}


def _read(store: Store, loc: InstanceLocation) -> FiducialSets:
    return parse_fiducials(dcmread(store.blobs.path(loc.blob_key)))


def _fiducials_body(store: Store, study: str, series: str, sop: str) -> dict:
    sets = _read(store, svc.locate_rt(store, study, series, sop, "FIDUCIALS"))
    return {"sop_instance_uid": sop, "fiducials": [_fiducial_json(f) for f in sets.fiducials],
            "frames_of_reference": sorted({f.frame_of_reference_uid for f in sets.fiducials
                                           if f.frame_of_reference_uid}),
            "warnings": sets.warnings}


async def get_fiducials(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_fiducials_body, *path_of(request)))


def registration_residuals(store: Store, loc: InstanceLocation, reg: Registration) -> list[dict]:
    """Per Registration Sequence item that lists Used Fiducials: its fiducials mapped into the
    registration's Frame of Reference against their pairs there (same identifier)."""
    used = used_fiducials(dcmread(store.blobs.path(loc.blob_key), stop_before_pixels=True))
    if not any(u for _, u in used):
        return []
    cache: dict[str, FiducialSets] = {}
    for _, pairs in used:
        for sop, _ in pairs:
            if sop and sop not in cache:
                try:
                    cache[sop] = _read(store, svc.instance_by_sop(store, sop, "FIDUCIALS",
                                                                  parameter="fiducials"))
                except NotFound:
                    cache[sop] = FiducialSets(sop, warnings=[f"FIDUCIALS {sop} is not stored"])
    everything = [f for sets in cache.values() for f in sets.fiducials]
    hub = reg.registered_for_uid
    fixed = [f for f in everything if f.frame_of_reference_uid == hub]
    matrices = {item.source_for_uid: item.matrix for item in reg.items}
    out = []
    for for_uid, pairs in used:
        if not pairs or for_uid == hub or for_uid not in matrices:
            continue
        wanted = {uid for _, uid in pairs}
        moving = [f for f in everything if f.uid in wanted and f.frame_of_reference_uid == for_uid]
        out.append({"from_frame_of_reference_uid": for_uid, "to_frame_of_reference_uid": hub,
                    "fiducials_instances": sorted({s for s, _ in pairs if s}),
                    "missing": sorted(wanted - {f.uid for f in moving}),
                    **residuals(matrices[for_uid], moving, fixed)})
    return out
