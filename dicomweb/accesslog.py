"""Structured access logs: one JSON object per request on the `dicomweb.access` logger, and
the request id every response carries (`X-Request-Id`) and every log line about it names."""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("dicomweb.access")

#: Query parameters whose values are credentials (share links): never logged.
SECRET_PARAMETER = re.compile(r"(?i)(^|&)((?:access_)?token)=[^&]*")


def request_id_of(connection: HTTPConnection) -> str:
    return connection.scope.get("state", {}).get("request_id", "-")


def redacted_query(query: str) -> str:
    return SECRET_PARAMETER.sub(r"\1\2=REDACTED", query)


class AccessLog:
    """Also adds `response_headers` (after X-Request-Id) to every response it sees start."""

    def __init__(self, app: ASGIApp,
                 response_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.app = app
        self.response_headers = response_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = os.urandom(16).hex()  # as uuid4().hex, without building a UUID
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        sent = 0

        async def send_counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []), (b"x-request-id", request_id.encode()),
                    *self.response_headers,
                ]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            if log.isEnabledFor(logging.INFO):  # build nothing when access logs are off
                log.info(orjson.dumps(access_record(scope, request_id, status, started, sent))
                         .decode())


def access_record(
    scope: Scope, request_id: str, status: int, started: float, sent: int
) -> dict[str, object]:
    client = scope.get("client")
    return {
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"],
        "query": redacted_query(scope.get("query_string", b"").decode("latin-1")),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "bytes": sent,
        "client": client[0] if client else None,
    }
