"""The ASGI middleware that records every request touching patient data before its response
starts: the record is committed (with those of concurrent requests) before the first byte of
the response leaves, so no data is sent whose access is not in the trail (PS3.15 A.5.3.3 records
the beginning of a transfer). If the record cannot be written, the client gets a 503 instead.
"""

from __future__ import annotations

import logging

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb.access import ANONYMOUS
from dicomweb.accesslog import redacted_query
from dicomweb.audit.events import (
    AuditEvent,
    Subject,
    Target,
    classify,
    merge,
    stored_subjects,
    subjects_of,
    utc_timestamp,
)
from dicomweb.audit.trail import AuditTrail
from dicomweb.audit.writer import AuditUnavailable
from dicomweb.store.repository import StoredInstance

log = logging.getLogger("dicomweb.audit")

DENIED_STATUSES = (401, 403)
UNAVAILABLE_BODY = orjson.dumps({"error": {
    "status": 503, "message": "the audit trail cannot be written: the request is refused"}})


class AuditMiddleware:
    def __init__(self, app: ASGIApp, trail: AuditTrail, root_path: str) -> None:
        self.app = app
        self.trail = trail
        self.root_path = root_path
        #: Audited requests of this process under way (one event loop: no lock needed).
        self.in_flight = 0

    def target(self, scope: Scope) -> Target | None:
        path: str = scope["path"]
        if self.root_path:
            if not path.startswith(self.root_path + "/"):
                return None
            path = path[len(self.root_path):]
        return classify(scope["method"], path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.target(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        started_at = utc_timestamp()
        subjects = subjects_of(target)
        if target.operation == "delete" and subjects:  # the index forgets them: look up first
            await run_in_threadpool(self.trail.resolve, subjects)
        recorded = refused = False

        async def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            event = self.event(scope, target, status, subjects, started_at)
            # Alone (no other audited request of this process under way): nothing to gather,
            # so written at once if that needs no wait; else with the others, in one commit.
            if self.in_flight != 1 or self.trail.record_now(event) is None:
                await self.trail.record(event, alone=False)

        async def send_recorded(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and not recorded:
                try:
                    await record(message["status"])
                except AuditUnavailable as exc:
                    log.error("%s %s refused: %s", scope["method"], scope["path"], exc)
                    refused = True
                    await send_unavailable(send)
                    return
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not recorded:  # the error response (500) is sent by the outer error handler
                try:
                    await record(500)
                except AuditUnavailable as exc:
                    log.error("%s %s: %s", scope["method"], scope["path"], exc)
            raise
        finally:
            self.in_flight -= 1

    def event(self, scope: Scope, target: Target, status: int, subjects: list[Subject],
              started_at: str) -> AuditEvent:
        state = scope.get("state", {})
        principal = state.get("principal", ANONYMOUS)
        denied = status in DENIED_STATUSES or bool(state.get("access_denied"))
        outcomes, found = state.get("stow_outcomes"), state.get("search_studies")
        if outcomes:
            subjects = merge(subjects, stored_subjects([
                (item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid)
                for item in outcomes if isinstance(item, StoredInstance)]))
        if found:
            # A search's studies, in order, once each (a series or instance search names a
            # study once per row); merged only when the path names a study too.
            found_subjects = [Subject(uid) for uid in dict.fromkeys(found)]
            subjects = merge(subjects, found_subjects) if subjects else found_subjects
        client = scope.get("client")
        query = scope.get("query_string", b"")
        return AuditEvent(
            event_time=started_at,
            request_id=state.get("request_id", "-"),
            action="denied" if denied else target.operation,
            operation=target.operation,
            status=status,
            user_kind=principal.kind,
            who=principal.subject,
            client_id=principal.client_id,
            client_address=client[0] if client else None,
            method=scope["method"],
            path=scope["path"],
            query=redacted_query(query.decode("latin-1")) if query else "",
            subjects=subjects,
        )


async def send_unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(UNAVAILABLE_BODY)).encode()),
        (b"retry-after", b"5"),
    ]})
    await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})
