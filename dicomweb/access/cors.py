"""CORS by whether authentication is on.

Anonymous (open) server: any origin may read, none may store or delete (their preflights are
refused), unless origins are listed. With authentication on, any origin may send bearer
tokens with every method: no cookies are used, so a page cannot act with a user's ambient
credentials (no CSRF). Listed origins (`DICOMWEB_CORS_ORIGINS`) get every method always.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomweb.access.authenticate import AccessControl

READ_METHODS = ["GET", "HEAD", "OPTIONS"]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]


class CorsPolicy:
    def __init__(self, app: ASGIApp, access: AccessControl, expose_headers: list[str]) -> None:
        self.access = access
        origins = list(access.settings.cors_origins)
        common = {"allow_headers": ["*"], "expose_headers": expose_headers, "max_age": 600}
        self.listed: ASGIApp | None = None
        if "*" not in origins:
            self.listed = CORSMiddleware(app, allow_origins=origins, allow_methods=ALL_METHODS,
                                         allow_credentials=True, **common)
        self.reads = CORSMiddleware(app, allow_origins=["*"], allow_methods=READ_METHODS,
                                    **common)
        self.everything = CORSMiddleware(app, allow_origins=["*"], allow_methods=ALL_METHODS,
                                         **common)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cross_origin = any(name == b"origin" for name, _ in scope.get("headers", ()))
        if self.listed is not None or scope["type"] != "http" or not cross_origin:
            await (self.listed or self.everything)(scope, receive, send)
            return
        is_open = self.access.anonymous_is_open()
        if is_open is None:
            is_open = await run_in_threadpool(self.access.check_open)
        await (self.reads if is_open else self.everything)(scope, receive, send)
