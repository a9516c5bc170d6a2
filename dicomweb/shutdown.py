"""Requests still running when the shutdown grace period ends.

After SIGTERM, uvicorn waits `shutdown_grace_seconds` for requests in flight, then cancels
those left. Cancelled here, such a request gets a clean `503 Service Unavailable` (the server
is going away: send again) and one log line, instead of uvicorn's bare 500 and a traceback.
What it stored before is whole (the store's journal), so sending it again is safe: instances
already stored come back as duplicates.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb.config import Settings

log = logging.getLogger("dicomweb")

MESSAGE = "the server is shutting down and this request did not finish in time; send it again"


class CancelledAtShutdown:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.retry_after = str(max(1, settings.shutdown_grace_seconds))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except asyncio.CancelledError:
            # Only uvicorn's graceful-shutdown timeout cancels a request task.
            log.warning("%s %s cancelled: shutdown grace period over (request %s)",
                        scope["method"], scope["path"], scope.get("state", {}).get("request_id"))
            if started:
                return  # a response under way cannot change: uvicorn closes the connection
            body = orjson.dumps({"error": {"status": 503, "message": MESSAGE}})
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", self.retry_after.encode()),
                (b"connection", b"close"),
            ]})
            await send({"type": "http.response.body", "body": body})

