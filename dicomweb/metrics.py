"""Prometheus metrics, served as `GET /metrics` in the text exposition format.

prometheus-client keeps the values. Under `dicomweb serve` each worker process writes them to
files in `PROMETHEUS_MULTIPROC_DIR` (its multiprocess mode; `serving` sets the folder before any
worker starts) and `/metrics` adds up every worker's files, so one scrape sees the whole server
whichever worker answers. Without that variable (tests in one process) the values are the
process's own.

The metric objects are module-level, as prometheus-client intends: each process has one set.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, event
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb.processes import process_alive

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "dicomweb_requests", "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "dicomweb_request_duration_seconds", "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INSTANCES_STORED = Counter(
    "dicomweb_instances_stored",
    "Instances received and kept, by outcome (stored, replaced, duplicate)", ["outcome"],
)
STORED_BYTES = Counter("dicomweb_stored_bytes", "Bytes of DICOM files stored (new or replaced)")
REJECTED_PARTS = Counter(
    "dicomweb_rejected_parts",
    "STOW-RS parts not stored, by failure reason (PS3.18 Table 10.5.3-3, hex)", ["reason"],
)
VOLUME_CACHE_BYTES = Gauge(
    "dicomweb_volume_cache_bytes", "Bytes of decoded volumes held for MPR (all workers)",
    multiprocess_mode="livesum",
)
VOLUME_CACHE_LOOKUPS = Counter(
    "dicomweb_volume_cache_lookups", "Volume cache lookups by result (hit, miss)", ["result"],
)
DB_CONNECTIONS_IN_USE = Gauge(
    "dicomweb_db_connections_in_use", "Database connections checked out of the pools",
    multiprocess_mode="livesum",
)
DB_POOL_CAPACITY = Gauge(
    "dicomweb_db_pool_capacity", "Connections the pools may open (size + overflow)",
    multiprocess_mode="livesum",
)
HIT_RATIO = "dicomweb_volume_cache_hit_ratio"
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (`/dicomweb/studies/{study}`), so requests are
    counted per resource, not per UID; a bounded label."""
    route: BaseRoute | None = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED
    mount = scope.get("root_path", "")[len(scope.get("app_root_path", "")):]
    return (mount + path) or "/"


class RequestMetrics:
    """Counts every HTTP request and observes its latency by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            counter, latency = series_of(scope["method"], route_template(scope), status)
            counter.inc()
            latency.observe(time.perf_counter() - started)


#: (method, route, status) -> the counter and histogram children: `labels()` takes a lock and
#: checks every value on each call. Bounded: routes are templates, methods and statuses few.
_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
MAX_SERIES = 4096


def series_of(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    found = _SERIES.get(key)
    if found is None:
        found = (REQUESTS.labels(method, route, str(status)),
                 REQUEST_SECONDS.labels(method, route))
        if len(_SERIES) < MAX_SERIES:
            _SERIES[key] = found
    return found


def record_store_outcome(outcome: str | None, size: int, reason: int | None = None) -> None:
    """One instance received: `outcome` is StoredInstance.outcome, or None with the failure
    `reason` when it was rejected."""
    if outcome is None:
        REJECTED_PARTS.labels(f"0x{reason or 0:04X}").inc()
        return
    INSTANCES_STORED.labels(outcome).inc()
    if outcome != "duplicate":
        STORED_BYTES.inc(size)


def record_volume_lookup(hit: bool, cache_bytes: int) -> None:
    VOLUME_CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()
    VOLUME_CACHE_BYTES.set(cache_bytes)


def observe_pool(engine: Engine) -> None:
    """Track the engine's pool: connections in use, and how many it may open."""
    pool = engine.pool
    size = getattr(pool, "size", lambda: 0)()
    DB_POOL_CAPACITY.inc(size + max(getattr(pool, "_max_overflow", 0), 0))
    event.listen(engine, "checkout", lambda *_: DB_CONNECTIONS_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: DB_CONNECTIONS_IN_USE.dec())


class WithHitRatio:
    """The collected metrics plus the volume cache's hit ratio computed from them."""

    def __init__(self, source: CollectorRegistry | multiprocess.MultiProcessCollector) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        lookups = {"hit": 0.0, "miss": 0.0}
        for family in self.source.collect():
            if family.name == "dicomweb_volume_cache_lookups":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        result = sample.labels.get("result", "")
                        lookups[result] = lookups.get(result, 0.0) + sample.value
            yield family
        total = lookups["hit"] + lookups["miss"]
        yield GaugeMetricFamily(
            HIT_RATIO, "Volume cache hits / lookups since start (0 before any lookup)",
            value=lookups["hit"] / total if total else 0.0,
        )


LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def forget_dead_processes(directory: str) -> None:
    """Live gauges of workers that died without shutting down (killed, crashed) would still be
    summed: remove their files."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        match = LIVE_GAUGE_FILE.search(path)
        if match and not process_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), directory)


def exposition() -> bytes:
    """Every metric of the server in the Prometheus text format."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    source: CollectorRegistry | multiprocess.MultiProcessCollector = REGISTRY
    if directory:
        forget_dead_processes(directory)
        source = multiprocess.MultiProcessCollector(None, path=directory)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WithHitRatio(source))  # type: ignore[arg-type]
    return generate_latest(registry)


def worker_exits() -> None:
    """Called when a worker shuts down: its live gauges no longer count."""
    if directory := os.environ.get(MULTIPROCESS_DIR_ENV):
        multiprocess.mark_process_dead(os.getpid(), directory)


async def metrics_endpoint(request: Request) -> Response:
    """`GET /metrics` (reading every worker's files is disk work: off the event loop)."""
    body = await run_in_threadpool(exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

