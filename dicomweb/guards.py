"""ASGI middleware that every request passes: the request body bound, and the one place an
unexpected exception becomes a 500 (so none reaches the server, which would close the
keep-alive connection after the response)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb.errors import PayloadTooLarge

log = logging.getLogger("dicomweb")

JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json_error(send: Send, status: int, body: dict[str, object],
                          extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps({"error": {"status": status, **body}})
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class InternalErrors:
    """The details of an unexpected exception go to the log under the request id; the client
    gets only `internal error` and that id. A client that went away gets nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except ClientDisconnect:
            log.info("%s %s: the client disconnected (request %s)", scope["method"],
                     scope["path"], request_id_of_scope(scope))
        except Exception:
            request_id = request_id_of_scope(scope)
            log.exception("%s %s failed (request %s)", scope["method"], scope["path"], request_id)
            if started:
                return  # the status line is out: the server cuts the response, as it must
            await send_json_error(send, 500, {"message": "internal error",
                                              "request_id": request_id})


def request_id_of_scope(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", "-"))


class NoNulInUrl:
    """400 for a path or query holding NUL (%00) before anything else sees it: no DICOM value
    holds one, and PostgreSQL refuses it in text (a UID of `1.2%00` failed the audit write
    and gave 503 on every route)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
            or b"\x00" in scope.get("query_string", b"")
        ):
            log.info("%s %r -> 400: NUL in the URL (request %s)", scope["method"],
                     scope["path"], request_id_of_scope(scope))
            await send_json_error(send, 400, {"message": "the URL holds a NUL character (%00), "
                                              "which no DICOM value has"})
            return
        await self.app(scope, receive, send)


class RequestBodyLimit:
    """No request body beyond `max_bytes`: a declared Content-Length above it gets 413 before
    a byte is read; a chunked body raises PayloadTooLarge where it crosses the limit. A 413
    sent before the whole body arrived closes the connection (the rest is not read, past a
    short linger)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = body_framing(scope)
        if declared is None and not chunked:
            # No Content-Length, no Transfer-Encoding: no body (RFC 9112 6.3), nothing to
            # count or bound; the request passes without the two wrappers.
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            log.info("%s %s -> 413: body of %d bytes (request %s)", scope["method"],
                     scope["path"], declared, request_id_of_scope(scope))
            await send_json_error(send, 413, {"message": too_large(self.max_bytes)},
                                  [(b"connection", b"close")])
            return
        received = 0
        complete = False
        closing = False

        async def receive_counting() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise PayloadTooLarge(too_large(self.max_bytes))
            return message

        async def send_closing(message: Message) -> None:
            nonlocal closing
            if message["type"] == "http.response.start" and not complete and (
                message["status"] == 413
            ):
                closing = True
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive_counting, send_closing)
        if closing:
            await linger(receive)


#: After a 413 in the middle of a body, what is still read (and dropped) before the server
#: closes the connection, so that a client finishing its last bytes reads the answer instead
#: of a reset.
LINGER_BYTES = 1 << 20
LINGER_S = 1.0


async def linger(receive: Receive) -> None:
    async def drain() -> None:
        drained = 0
        while drained < LINGER_BYTES:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            drained += len(message.get("body", b""))

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), LINGER_S)


def body_framing(scope: Scope) -> tuple[int | None, bool]:
    """(the declared Content-Length, None if absent or malformed; whether a Transfer-Encoding
    is sent)."""
    declared: int | None = None
    chunked = False
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                chunked = True  # malformed: counted as it arrives, as a chunked body is
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def too_large(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes (DICOMWEB_MAX_UPLOAD_BYTES)"
