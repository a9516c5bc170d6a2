"""`GET {root}/audit`: the trail for privacy officers (dicomweb:admin), as JSON records or as
a FHIR R4 Bundle of AuditEvents (`Accept: application/fhir+json`, IHE BALP)."""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.audit import fhir
from dicomweb.audit.search import parse_query, search
from dicomweb.urls import service_base_url

FHIR_JSON = "application/fhir+json"


def wants_fhir(request: Request) -> bool:
    return (FHIR_JSON in request.headers.get("accept", "")
            or request.query_params.get("_format", "") in (FHIR_JSON, "json"))


async def search_audit_trail(request: Request) -> Response:
    query = parse_query(request.query_params)
    records = await run_in_threadpool(search, request.app.state.store.engine, query)
    if wants_fhir(request):
        server = service_base_url(request, request.app.state.settings)
        body = fhir.bundle(records, server, query.patient)
        return Response(orjson.dumps(body), media_type=FHIR_JSON)
    return Response(orjson.dumps(records), media_type="application/json")


def audit_routes() -> list[Route]:
    return [Route("/audit", search_audit_trail, methods=["GET"])]
