"""RT Image geometry: ``…/instances/{i}/rt/image`` (read from the stored file; the pixels are
served by the instance's ``/rendered`` and ``/frames`` resources like any image)."""

from __future__ import annotations

from pydicom import dcmread
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.store.repository import Store

from .. import service as svc
from ..rtimage import rt_image_geometry
from .common import json_response, path_of, query_params, run_rt


def _image_body(store: Store, study: str, series: str, sop: str) -> dict:
    loc = svc.locate_rt(store, study, series, sop, "RTIMAGE")
    body = rt_image_geometry(dcmread(store.blobs.path(loc.blob_key), stop_before_pixels=True))
    body["rendered"] = f"studies/{study}/series/{series}/instances/{sop}/rendered"
    return body


async def get_rt_image(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(_image_body, *path_of(request)))
