"""create_app(settings): the route table, middleware and the one error handler."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from dicomweb import metrics, qido, stow, wado, wado_frames
from dicomweb.access import study_filter_of
from dicomweb.access.authenticate import AccessControl, Authentication
from dicomweb.access.authorize import protect
from dicomweb.access.cors import CorsPolicy
from dicomweb.access.routes import access_routes
from dicomweb.accesslog import AccessLog, request_id_of
from dicomweb.attributes import Level
from dicomweb.audit import AuditMiddleware, AuditTrail, audit_routes
from dicomweb.capabilities import capabilities_route
from dicomweb.compression import compress_json_answers, json_response
from dicomweb.config import Settings
from dicomweb.errors import DicomWebError, NotAcceptable
from dicomweb.guards import InternalErrors, NoNulInUrl, RequestBodyLimit
from dicomweb.http_cache import REVALIDATE, BodyCache
from dicomweb.ingest_pool import IngestPool, pool_size
from dicomweb.locations import LocationCache
from dicomweb.negotiation import accepts_json
from dicomweb.pixels.budget import MemoryBudget
from dicomweb.pixels.routes import routes as pixel_routes
from dicomweb.routing import IndexedRouter
from dicomweb.rt.routes import routes as rt_routes
from dicomweb.shutdown import CancelledAtShutdown
from dicomweb.sources import raise_open_file_limit
from dicomweb.store import query as store_query
from dicomweb.store.repository import Store
from dicomweb.urls import TrustedProxies, service_base_url

log = logging.getLogger("dicomweb")

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


def search_endpoint(level: Level):  # type: ignore[no-untyped-def]
    async def search(request: Request) -> Response:
        """QIDO-RS search (PS3.18 10.6) at `level`, scoped by the path's UIDs."""
        if not accepts_json(wado.accept_ranges(request)):
            raise NotAcceptable("search results are available as application/dicom+json only")
        settings: Settings = request.app.state.settings
        query = qido.parse_search(
            request.url.query,
            level,
            request.path_params.get("study"),
            request.path_params.get("series"),
            max_results=settings.qido_max_results,
        )
        base = service_base_url(request, settings)
        page = await run_in_threadpool(
            store_query.search_json, request.app.state.store.engine, query, base,
            study_filter_of(request),
        )
        request.state.search_studies = page.study_uids  # the audit trail records them
        headers = {}
        if page.more:
            headers["Warning"] = (
                f'299 {request.url.hostname or "dicomweb"}: "There are additional results that '
                'can be requested"'
            )
        if not page.study_uids:
            return Response(status_code=204, headers=headers)
        headers["Cache-Control"] = REVALIDATE
        return json_response(request, page.body, "application/dicom+json", headers)

    search.__name__ = f"search_for_{level.value}"
    return search


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    from sqlalchemy import text

    def ping() -> None:
        with request.app.state.store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception:  # any database failure means not ready; the details go to the log
        log.exception("readiness check: the database does not answer")
        return JSONResponse({"status": "unavailable", "detail": "the database does not answer"},
                            status_code=503)
    return JSONResponse({"status": "ready"})


def json_compressed(route: Any) -> Any:
    """The same route, its JSON answers compressed when the client accepts it."""
    if not isinstance(route, Route):
        return route
    return Route(route.path, compress_json_answers(route.endpoint), methods=route.methods,
                 name=route.name)


def dicomweb_routes() -> list[Route]:
    """The map of the service (PS3.18 10.4 WADO-RS, 10.5 STOW-RS, 10.6 QIDO-RS)."""
    return [
        Route("/studies", stow.store_instances, methods=["POST"]),
        Route("/studies", search_endpoint(Level.STUDY), methods=["GET"]),
        Route("/series", search_endpoint(Level.SERIES), methods=["GET"]),
        Route("/instances", search_endpoint(Level.INSTANCE), methods=["GET"]),
        Route(STUDY, stow.store_instances, methods=["POST"]),
        Route(STUDY, wado.retrieve_instances, methods=["GET"]),
        Route(STUDY, wado.delete_resource, methods=["DELETE"]),
        Route(STUDY + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(STUDY + "/series", search_endpoint(Level.SERIES), methods=["GET"]),
        Route(STUDY + "/instances", search_endpoint(Level.INSTANCE), methods=["GET"]),
        Route(SERIES, wado.retrieve_instances, methods=["GET"]),
        Route(SERIES, wado.delete_resource, methods=["DELETE"]),
        Route(SERIES + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(SERIES + "/instances", search_endpoint(Level.INSTANCE), methods=["GET"]),
        Route(INSTANCE, wado.retrieve_instances, methods=["GET"]),
        Route(INSTANCE, wado.delete_resource, methods=["DELETE"]),
        Route(INSTANCE + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(INSTANCE + "/frames/{frames}", wado_frames.retrieve_frames, methods=["GET"]),
        Route(INSTANCE + "/bulkdata/{path:path}", wado_frames.retrieve_bulkdata, methods=["GET"]),
    ]


async def handle_dicomweb_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomWebError)
    message = " ".join(exc.message.split())  # one log line (decoder messages span several)
    if exc.status_code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, message)
    else:
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, message)
    return Response(orjson.dumps(exc.to_json()), status_code=exc.status_code,
                    media_type="application/json", headers=exc.headers)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {"error": {"status": exc.status_code, "message": exc.detail}}
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json",
                    headers=getattr(exc, "headers", None))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The details go to the log under the request id; the body says only that much."""
    request_id = request_id_of(request)
    log.exception("%s %s failed (request %s)", request.method, request.url.path, request_id)
    body = {"error": {"status": 500, "message": "internal error", "request_id": request_id}}
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")


#: OHIF runs cross-origin isolated (COEP require-corp): images it loads directly need
#: `Cross-Origin-Resource-Policy: cross-origin`. Added by AccessLog with the request id (one
#: rewrite of the status line's headers, not one per middleware).
RESPONSE_HEADERS = ((b"cross-origin-resource-policy", b"cross-origin"),)


# Headers cross-origin clients may read: paging warnings, and the geometry that accompanies
# binary MPR planes, dose grids and masks.
EXPOSED_HEADERS = [
    "Warning", "Content-Location", "Content-Type", "Content-Length",
    "X-Plane-Origin", "X-Plane-Row-Direction", "X-Plane-Column-Direction", "X-Plane-Normal",
    "X-Plane-Pixel-Spacing", "X-Plane-Size", "X-Plane-Position", "X-Plane-Index",
    "X-Plane-Count", "X-Volume-Cache", "X-Frame-Of-Reference-UID", "X-Grid-Shape",
    "X-Grid-Origin", "X-Grid-Row-Direction", "X-Grid-Column-Direction", "X-Grid-Normal",
    "X-Grid-Pixel-Spacing", "X-Grid-Slice-Offsets", "X-Dose-Units", "X-Voxel-Count",
    "X-Request-Id",
]


class WithoutTraceback(logging.Filter):
    """Drops records that carry a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


#: pydicom logs each decoding plugin that fails on a frame with its traceback, then raises one
#: error naming every plugin's reason; that error becomes our 406/422 and its one log line.
PYDICOM_DECODERS_LOG = "pydicom.pixels.decoders.base"


def configure_logging(level: str) -> None:
    """Each worker process builds its app here: give it a handler for our loggers."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dicomweb").setLevel(level.upper())
    decoders = logging.getLogger(PYDICOM_DECODERS_LOG)
    if not any(isinstance(f, WithoutTraceback) for f in decoders.filters):
        decoders.addFilter(WithoutTraceback())


#: How often each worker removes what dead processes left (temp files, unindexed blobs).
SWEEP_INTERVAL_S = 60.0


async def sweep_periodically(store: Store) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            await run_in_threadpool(store.recover)
        except Exception:  # the next round tries again; the reason goes to the log
            log.exception("sweeping temp files and unindexed blobs failed")


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    store = store or Store(settings)
    ingest_pool = IngestPool(pool_size(settings.ingest_processes, settings.workers))
    metrics.observe_pool(store.engine)
    audit_trail = AuditTrail(store)  # registers its tables: created with the index's
    access = AccessControl(settings, store)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await run_in_threadpool(store.create_schema)
        await run_in_threadpool(store.recover)
        await run_in_threadpool(access.start)
        # What is alive now (modules, pydicom's dictionary, the app) lives as long as the
        # process: keep it out of full collections, which otherwise stall about one request in
        # ten for ~60 ms (QIDO study list p90 47 ms without this, 9 ms with it).
        gc.freeze()
        # A young collection every 10,000 new objects, not 700: a 500-study QIDO page makes
        # ~60,000 (dicts of DICOM JSON), and each collection also walks what earlier ones kept
        # (PatientName=S* 11.3 -> 10.0 ms CPU in-process; cycles are still collected).
        gc.set_threshold(10_000, *gc.get_threshold()[1:])
        sweeper = asyncio.create_task(sweep_periodically(store))
        yield
        ingest_pool.close()
        sweeper.cancel()
        audit_trail.close()
        store.close()
        metrics.worker_exits()

    # Pixel (rendered, volume, MPR) and RT resources live under the same root.
    extension_routes = [*pixel_routes(store), *map(json_compressed, rt_routes(store))]
    service = dicomweb_routes() + extension_routes + access_routes() + audit_routes()
    capabilities = capabilities_route(service)
    service.append(capabilities)
    routes: list[Any] = [
        Route("/healthz", health),
        Route("/readyz", ready),
        # Prometheus text format; an admin resource once authentication is configured.
        Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
        # PS3.18 8.9: the root as written without its slash (`OPTIONS /dicomweb`) is the same
        # resource; answered here, not redirected (and not the viewer's catch-all's 405).
        Route(settings.root_path, capabilities.endpoint, methods=["OPTIONS"])
        if settings.root_path else None,
        Mount(settings.root_path, app=IndexedRouter(routes=service)) if settings.root_path
        else None,
    ]
    if not settings.root_path:
        routes = routes[:3] + service
    if settings.viewer:  # the OHIF viewer's catch-all comes last: DICOMweb and health win
        from dicomweb.viewer import viewer_routes

        routes += viewer_routes(settings)
    routes = [r for r in routes if r is not None]
    protect(routes, settings)  # every route, present and future, behind one authorization
    middleware = [
        Middleware(TrustedProxies, allow=settings.forwarded_allow_ips),  # first: the client
        Middleware(CorsPolicy, access=access, expose_headers=EXPOSED_HEADERS),
        Middleware(AccessLog, response_headers=RESPONSE_HEADERS),
        Middleware(metrics.RequestMetrics),
        Middleware(RequestBodyLimit, max_bytes=settings.max_upload_bytes),
        Middleware(NoNulInUrl),
        # Outside the access layer, so that what it refuses (401, 403) is recorded too.
        *([Middleware(AuditMiddleware, trail=audit_trail, root_path=settings.root_path)]
          if settings.audit == "on" else []),
        Middleware(Authentication, access=access),
        Middleware(CancelledAtShutdown, settings=settings),
        Middleware(InternalErrors),  # innermost: an exception never reaches the server
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            DicomWebError: handle_dicomweb_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
    )
    # Routes tried by the shape of the path (the service's own too when there is no root).
    app.router = IndexedRouter(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.ingest_pool = ingest_pool
    app.state.locations = LocationCache()
    app.state.bodies = BodyCache(settings.response_cache_bytes)
    raise_open_file_limit()  # a retrieve opens all its files before its status line
    app.state.pixel_budget = MemoryBudget(  # the budget is shared by the worker processes
        settings.pixel_memory_bytes // max(settings.workers, 1), settings.pixel_wait_seconds)
    app.state.audit_trail = audit_trail
    app.state.access = access
    return app
