"""STOW-RS (PS3.18 10.5): multipart/related or single application/dicom bodies, streamed to
disk part by part, each part stored on its own (whole or not at all)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb import metrics
from dicomweb.access import study_writer_of
from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    BadRequest,
    InstanceRejected,
    UnsupportedMediaType,
)
from dicomweb.http_cache import NO_STORE
from dicomweb.ingest_pool import IngestPool
from dicomweb.multipart import ReceivedPart, read_parts, spill
from dicomweb.negotiation import parse_accept
from dicomweb.store.access import StudyWriter
from dicomweb.store.repository import Store, StoredInstance, rejection_for
from dicomweb.urls import service_base_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: Parts stored together: one duplicate query, journal and index transaction per batch.
BATCH_SIZE = 32
#: Parts up to this size are held in memory until their batch is handed over, then written to
#: temp files in a thread (`multipart.spill`), so the event loop never waits on the journal;
#: a batch is handed over early once it holds SPOOL_BATCH_BYTES of them (memory per request
#: stays about twice that).
SPOOL_PART_BYTES = 256 * 1024
SPOOL_BATCH_BYTES = 4 * 1024 * 1024
#: A batch holding this many bytes is handed over before it is full whenever the batch before
#: it is done: one client's large instances are then parsed while the rest of its request is
#: still arriving (a request of small instances stays one batch: fewer transactions).
EARLY_BATCH_BYTES = 1024 * 1024
# DICOM JSON tags of the response (PS3.18 Table 10.5.3-2).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
ERROR_COMMENT = "00000902"
COERCION_OF_DATA_ELEMENTS = 0xB000


def media_type_and_params(header: str) -> tuple[str, dict[str, str]]:
    ranges = parse_accept(header)
    media = ranges[0] if ranges else None
    if media is None:
        return "", {}
    return media.media_type, {**media.params, "type": media.params.get("type", "")}


async def store_instances(request: Request) -> Response:
    store: Store = request.app.state.store
    settings = request.app.state.settings
    pool: IngestPool = request.app.state.ingest_pool
    study = request.path_params.get("study")
    writer = study_writer_of(request)
    media_type, params = media_type_and_params(request.headers.get("content-type", ""))
    outcomes: list[StoredInstance | InstanceRejected] = []
    request.state.stow_outcomes = outcomes  # the audit trail reads what was stored, even on error
    if media_type == "multipart/related":
        part_type = params.get("type", "").lower()
        if part_type and part_type != DICOM:
            raise UnsupportedMediaType(
                f'multipart/related with type="{part_type}" is not supported; send '
                f'type="{DICOM}" parts'
            )
        boundary = params.get("boundary")
        if not boundary:
            raise BadRequest("multipart/related Content-Type has no boundary parameter")
        await store_multipart(store, pool, request, boundary, study, writer, settings.max_parts,
                              outcomes)
    elif media_type == DICOM:
        part = await receive_single_part(store, request)
        outcomes += await store_parts(store, pool, [part], study, writer)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not supported; use multipart/related; "
            f'type="{DICOM}" or {DICOM}'
        )
    return stow_response(outcomes, service_base_url(request, settings), study)


async def store_multipart(
    store: Store, pool: IngestPool, request: Request, boundary: str, study: str | None,
    writer: StudyWriter, max_parts: int, outcomes: list[StoredInstance | InstanceRejected],
) -> None:
    """Parts are stored in batches as they arrive, their outcomes added to `outcomes` in
    order. One batch is parsed and stored while the next one is being received, so a single
    client's upload keeps the ingest processes and the network busy at once. Whatever ends
    the body early (a malformed part, a limit, a disconnect) leaves no temp file of the parts
    received but not stored; a batch already handed over is stored whole."""
    batch: list[ReceivedPart] = []
    spooled = received = 0
    in_flight: asyncio.Task[list[StoredInstance | InstanceRejected]] | None = None
    try:
        async for part in read_parts(request.stream(), boundary, store.blobs,
                                     max_parts=max_parts, spool_bytes=SPOOL_PART_BYTES):
            batch.append(part)
            spooled += len(part.data) if part.data is not None else 0
            received += part.size
            idle = in_flight is None or in_flight.done()
            if (len(batch) == BATCH_SIZE or spooled >= SPOOL_BATCH_BYTES
                    or (idle and received >= EARLY_BATCH_BYTES)):
                taken, batch, spooled, received = batch, [], 0, 0
                if in_flight is not None:
                    outcomes += await in_flight
                in_flight = asyncio.ensure_future(store_parts(store, pool, taken, study, writer))
        if in_flight is not None:
            outcomes += await in_flight
            in_flight = None
        if batch:
            taken, batch = batch, []
            outcomes += await store_parts(store, pool, taken, study, writer)
    finally:
        if in_flight is not None:  # the body ended badly: the batch handed over still counts
            try:
                outcomes += await asyncio.shield(in_flight)
            except Exception:  # its own failure; the one that ended the body is raised
                log.exception("storing a STOW batch failed")
        for part in batch:
            if part.path is not None:
                store.blobs.discard(part.path)
    if not outcomes:
        raise BadRequest("the multipart body holds no part")


async def receive_single_part(store: Store, request: Request) -> ReceivedPart:
    """An application/dicom body, written to a temp file as it arrives."""
    path = store.blobs.new_temp_path()
    part = ReceivedPart({"content-type": DICOM}, path)
    try:
        with store.blobs.open_temp(path) as fp:
            async for chunk in request.stream():
                fp.write(chunk)
                part.size += len(chunk)
    except OSError as exc:  # e.g. the disk is full: this part's failure
        store.blobs.discard(path)
        part.path, part.write_error = None, exc
        return part
    except BaseException:
        store.blobs.discard(path)
        raise
    if part.size == 0:
        store.blobs.discard(path)
        raise BadRequest("the application/dicom body is empty")
    return part


async def store_parts(
    store: Store, pool: IngestPool, parts: list[ReceivedPart], study: str | None,
    writer: StudyWriter,
) -> list[StoredInstance | InstanceRejected]:
    """Store a batch of received parts (all consumed); parts that are not application/dicom
    or could not be written are rejected, in their order. The parts are parsed in the ingest
    processes while this event loop goes on receiving and answering."""
    if any(part.data is not None for part in parts):
        try:  # not abandoned when cancelled: every file it made is known here
            await run_in_threadpool(spill, parts, store.blobs)
        except BaseException:
            for part in parts:
                if part.path is not None:
                    store.blobs.discard(part.path)
            raise
    outcomes: list[StoredInstance | InstanceRejected | None] = []
    dicom_parts: list[ReceivedPart] = []
    for part in parts:
        part_type = part.content_type.split(";")[0].strip().lower()
        if part.path is None:
            outcomes.append(rejection_for(part.write_error or OSError("part not written")))
        elif part_type and part_type != DICOM:
            store.blobs.discard(part.path)
            outcomes.append(
                InstanceRejected(CANNOT_UNDERSTAND, f"part Content-Type {part_type} is not {DICOM}")
            )
            metrics.record_store_outcome(None, part.size, CANNOT_UNDERSTAND)
        else:
            dicom_parts.append(part)
            outcomes.append(None)
    if dicom_parts:
        paths = [p.path for p in dicom_parts if p.path is not None]
        try:
            parsed = await pool.parse(paths, study, store.inflate_limits)
        except BaseException:
            for path in paths:
                store.blobs.discard(path)
            raise
        stored = await run_in_threadpool(store.store_parsed, paths, parsed, writer=writer)
        for part, outcome in zip(dicom_parts, stored, strict=True):
            if isinstance(outcome, InstanceRejected):
                log.warning("STOW part rejected (0x%04X): %s", outcome.reason, outcome.message)
                metrics.record_store_outcome(None, part.size, outcome.reason)
            else:
                metrics.record_store_outcome(outcome.outcome, part.size)
        in_order = iter(stored)
        outcomes = [next(in_order) if o is None else o for o in outcomes]
    return [o for o in outcomes if o is not None]


def stow_response(
    outcomes: list[StoredInstance | InstanceRejected], base_url: str, study: str | None
) -> Response:
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, InstanceRejected):
            item: dict[str, Any] = {FAILURE_REASON: {"vr": "US", "Value": [outcome.reason]}}
            if outcome.sop_class_uid:
                item[REFERENCED_SOP_CLASS_UID] = {"vr": "UI", "Value": [outcome.sop_class_uid]}
            if outcome.sop_instance_uid:
                item[REFERENCED_SOP_INSTANCE_UID] = {
                    "vr": "UI",
                    "Value": [outcome.sop_instance_uid],
                }
            item[ERROR_COMMENT] = {"vr": "LO", "Value": [outcome.message]}
            failed.append(dict(sorted(item.items())))
            continue
        url = (
            f"{base_url}/studies/{outcome.study_instance_uid}/series/"
            f"{outcome.series_instance_uid}/instances/{outcome.sop_instance_uid}"
        )
        item = {
            REFERENCED_SOP_CLASS_UID: {"vr": "UI", "Value": [outcome.sop_class_uid]},
            REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [outcome.sop_instance_uid]},
            RETRIEVE_URL: {"vr": "UR", "Value": [url]},
        }
        if outcome.warnings:
            item[WARNING_REASON] = {"vr": "US", "Value": [COERCION_OF_DATA_ELEMENTS]}
            item[ERROR_COMMENT] = {"vr": "LO", "Value": ["; ".join(outcome.warnings)]}
        referenced.append(dict(sorted(item.items())))
    body: dict[str, Any] = {}
    stored_studies = {o.study_instance_uid for o in outcomes if isinstance(o, StoredInstance)}
    target = study or (next(iter(stored_studies)) if len(stored_studies) == 1 else None)
    if target:
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base_url}/studies/{target}"]}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    if referenced:
        body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced}
    # PS3.18 10.5.3: 200 all stored, 202 some failed or stored with warnings, 409 none stored.
    if not referenced:
        status = 409
    elif failed or any(WARNING_REASON in item for item in referenced):
        status = 202
    else:
        status = 200
    return Response(orjson.dumps(body), status_code=status, media_type="application/dicom+json",
                    headers={"Cache-Control": NO_STORE})
