"""STOW-RS (PS3.18 10.5): multipart/related or single application/dicom bodies, streamed to
disk part by part, each part stored on its own (whole or not at all)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.access import study_writer_of
from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    BadRequest,
    InstanceRejected,
    UnsupportedMediaType,
)
from dicomweb.multipart import ReceivedPart, read_parts
from dicomweb.negotiation import parse_accept
from dicomweb.store.access import StudyWriter
from dicomweb.store.repository import Store, StoredInstance
from dicomweb.urls import service_base_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: Parts stored together: one duplicate query, journal and index transaction per batch.
BATCH_SIZE = 32
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
        batch: list[ReceivedPart] = []
        async for part in read_parts(request.stream(), boundary, store.blobs.new_temp_path):
            batch.append(part)
            if len(batch) == BATCH_SIZE:
                outcomes += await store_parts(store, batch, study, writer)
                batch = []
        if batch:
            outcomes += await store_parts(store, batch, study, writer)
        if not outcomes:
            raise BadRequest("the multipart body holds no part")
    elif media_type == DICOM:
        part = ReceivedPart({"content-type": DICOM}, store.blobs.new_temp_path())
        with part.path.open("wb") as fp:
            async for chunk in request.stream():
                fp.write(chunk)
                part.size += len(chunk)
        if part.size == 0:
            part.path.unlink(missing_ok=True)
            raise BadRequest("the application/dicom body is empty")
        outcomes += await store_parts(store, [part], study, writer)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not supported; use multipart/related; "
            f'type="{DICOM}" or {DICOM}'
        )
    return stow_response(outcomes, service_base_url(request, request.app.state.settings), study)


async def store_parts(
    store: Store, parts: list[ReceivedPart], study: str | None, writer: StudyWriter
) -> list[StoredInstance | InstanceRejected]:
    """Store a batch of received parts; parts that are not application/dicom are rejected."""
    outcomes: list[StoredInstance | InstanceRejected] = []
    dicom_parts: list[ReceivedPart] = []
    for part in parts:
        part_type = part.content_type.split(";")[0].strip().lower()
        if part_type and part_type != DICOM:
            part.path.unlink(missing_ok=True)
            outcomes.append(
                InstanceRejected(CANNOT_UNDERSTAND, f"part Content-Type {part_type} is not {DICOM}")
            )
        else:
            dicom_parts.append(part)
    if dicom_parts:
        stored = await run_in_threadpool(
            store.store_files, [p.path for p in dicom_parts], expected_study=study,
            writer=writer,
        )
        for outcome in stored:
            if isinstance(outcome, InstanceRejected):
                log.warning("STOW part rejected (0x%04X): %s", outcome.reason, outcome.message)
        outcomes += stored
    return outcomes


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
    return Response(orjson.dumps(body), status_code=status, media_type="application/dicom+json")
