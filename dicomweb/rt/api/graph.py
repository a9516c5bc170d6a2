"""The study's RT graph: ``/studies/{s}/rt``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dicomweb.access import study_filter_of

from ..graph import study_graph
from .common import json_response, query_params, run_rt


async def get_study_graph(request: Request) -> Response:
    query_params(request, set())
    return json_response(await run_rt(study_graph, request.app.state.store.engine,
                                      request.path_params["study"], study_filter_of(request)))
