"""What a caller may do: one table of route patterns × methods → permission, and one function
that decides, applied to every route of the application by `protect` when the app is built.

A route the table does not name needs dicomweb:admin (the table fails closed). Beyond the
scope, a request naming a study (in its path, or any UID in its query: structure sets, doses,
registrations, fused series) is refused with 404, exactly like an unknown UID, unless the
caller may see every study it touches. Searches are not refused: the store filters their rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomweb.access import (
    ADMIN,
    DELETE,
    READ,
    UNAUTHENTICATED,
    WRITE,
    Principal,
    study_filter,
)
from dicomweb.config import Settings
from dicomweb.errors import Forbidden, NotFound, Unauthorized
from dicomweb.store.access import EVERY_STUDY, StudyFilter, visible_objects

PUBLIC = "public"
REALM = 'Bearer realm="dicomweb"'
#: A DICOM UID (PS3.5 9.1) as a query value may name a study, series or instance. Three
#: components at least, so decimal numbers (window=40.5) are not taken for one.
UID_VALUE = re.compile(r"[0-9]+(?:\.[0-9]+){2,}")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Query parameters whose UIDs are Frames of Reference, not stored objects.
NOT_OBJECTS = frozenset({"from", "to"})


@dataclass(frozen=True)
class Rule:
    """`methods` on `path` need `permission`. Paths are route templates, relative to the
    DICOMweb root unless `server` (health, the viewer); a trailing `/*` matches the template
    and anything below it. `search`: the store filters the rows, nothing is refused."""

    methods: frozenset[str]
    path: str
    permission: str
    search: bool = False
    server: bool = False

    def matches(self, method: str, template: str) -> bool:
        if method not in self.methods:
            return False
        if self.path.endswith("/*"):
            stem = self.path[:-2]
            return template == stem or template.startswith(stem + "/")
        return template == self.path


def rule(methods: str, path: str, permission: str, **flags: bool) -> Rule:
    return Rule(frozenset(methods.split()), path, permission, **flags)


STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

#: The permission table, first match wins. Why each public route is public: the health checks
#: hold no data and load balancers call them without credentials; the viewer's files and its
#: app-config.js hold no patient data and OHIF must load them to show its login.
RULES: tuple[Rule, ...] = (
    rule("GET HEAD", "/healthz", PUBLIC, server=True),
    rule("GET HEAD", "/readyz", PUBLIC, server=True),
    # Prometheus metrics (outside the root): operational data, for admins (scrapers send a
    # token or an API key).
    rule("GET HEAD", "/metrics", ADMIN, server=True),
    rule("GET HEAD", "/{path:path}", PUBLIC, server=True),
    # PS3.18 8.9 Retrieve Capabilities.
    rule("OPTIONS", "/", READ),
    # QIDO-RS: every level, filtered inside the store's query.
    rule("GET HEAD", "/studies", READ, search=True),
    rule("GET HEAD", "/series", READ, search=True),
    rule("GET HEAD", "/instances", READ, search=True),
    rule("GET HEAD", STUDY + "/series", READ, search=True),
    rule("GET HEAD", STUDY + "/instances", READ, search=True),
    rule("GET HEAD", SERIES + "/instances", READ, search=True),
    # STOW-RS: the store refuses instances of studies the caller may not add to.
    rule("POST", "/studies", WRITE),
    rule("POST", STUDY, WRITE),
    rule("DELETE", STUDY, DELETE),
    rule("DELETE", SERIES, DELETE),
    rule("DELETE", INSTANCE, DELETE),
    # Labels and the audit trail: admins only.
    rule("GET HEAD", STUDY + "/labels", ADMIN),
    rule("PUT DELETE", STUDY + "/labels/{label}", ADMIN),
    rule("GET HEAD", "/audit", ADMIN),
    # Share links: whoever may read the study; revoking, its creator (or an admin).
    rule("POST", STUDY + "/share", READ),
    rule("DELETE", "/shares/{share}", READ),
    # Every other read of a study: WADO-RS, metadata, frames, bulk data, rendered,
    # thumbnails, volume, MPR, RT.
    rule("GET HEAD", STUDY + "/*", READ),
)
#: What a route nobody listed needs.
UNLISTED = ADMIN


def permission_rule(method: str, template: str, *, server: bool) -> Rule | None:
    for candidate in RULES:
        if candidate.server == server and candidate.matches(method, template):
            return candidate
    return None


def authorize(principal: Principal, permission: str, *, credential_error: str | None = None,
              method: str = "GET") -> None:
    """The one decision on scopes: raise Unauthorized (401) or Forbidden (403), or return."""
    if permission == PUBLIC:
        return
    if credential_error is not None:
        description = credential_error.replace('"', "'")
        raise Unauthorized(
            f"credentials refused: {credential_error}",
            headers={"WWW-Authenticate":
                     f'{REALM}, error="invalid_token", error_description="{description}"'})
    if not principal.scopes and principal.kind == "anonymous":
        raise Unauthorized("authentication required: send a bearer token or an API key",
                           headers={"WWW-Authenticate": REALM})
    if principal.kind == "share" and method not in SAFE_METHODS:
        raise Forbidden("a share link only reads its study",
                        headers={"WWW-Authenticate":
                                 f'{REALM}, error="insufficient_scope", scope="{permission}"'})
    if not principal.has(permission):
        raise Forbidden(
            f"this request needs the {permission} scope",
            headers={"WWW-Authenticate":
                     f'{REALM}, error="insufficient_scope", scope="{permission}"'})


def describe(params: dict[str, Any]) -> str:
    text = f"study {params['study']}"
    if params.get("series"):
        text += f", series {params['series']}"
    if params.get("instance"):
        text += f", instance {params['instance']}"
    return text


def referenced_uids(query_string: bytes) -> list[tuple[str, str]]:
    """(parameter, UID) pairs of the query that may name stored objects."""
    from urllib.parse import parse_qsl

    found: list[tuple[str, str]] = []
    for name, value in parse_qsl(query_string.decode("latin-1")):
        if name in NOT_OBJECTS:
            continue
        for item in re.split(r"[,\\\s]+", value):
            if len(item) <= 64 and UID_VALUE.fullmatch(item):
                found.append((name, item))
    return found


class Guard:
    """Wraps one route's ASGI app: authorization first, then the route."""

    def __init__(self, app: ASGIApp, rules: dict[str, Rule | None], settings: Settings) -> None:
        self.app = app
        self.rules = rules
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # nothing here speaks WebSocket: refuse (policy violation)
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope["method"]
        found = self.rules.get(method)
        permission = found.permission if found else UNLISTED
        state = scope.setdefault("state", {})
        # Without the Authentication middleware nobody is anybody: fail closed.
        principal = state.get("principal", UNAUTHENTICATED)
        try:
            authorize(principal, permission, credential_error=state.get("credential_error"),
                      method=method)
        except (Unauthorized, Forbidden) as refused:
            state["access_denied"] = refused.message
            raise
        if permission != PUBLIC:
            access = study_filter(principal, self.settings)
            state["study_filter"] = access
            # Searches are filtered by the store; so is STOW (instances of studies the caller
            # may not add to are refused one by one).
            checked = not (found and found.search) and permission != WRITE
            if checked and not access.unrestricted:
                await self.check_studies(scope, access)
        await self.app(scope, receive, send)

    async def check_studies(self, scope: Scope, access: StudyFilter) -> None:
        """404 unless the path's study and every object the query names are stored and
        visible: a hidden study answers exactly like an unknown one (one query, none when
        the answers are remembered: what a filter sees is kept for the credential cache
        time, so a label taken off a study stops granting access within that delay)."""
        params = scope.get("path_params", {})
        study = params.get("study")
        references = referenced_uids(scope.get("query_string", b""))
        shared = access.labels is None and access.study == study  # a share's own study
        wanted = {uid for _, uid in references} | ({study} if study and not shared else set())
        if not wanted:
            return
        engine = scope["app"].state.store.engine
        remembered = scope["app"].state.access.visible
        prefix = filter_key(access)
        visible = {uid for uid in wanted if remembered.get(prefix + uid)}
        if wanted - visible:
            found = await run_in_threadpool(visible_objects, engine, access, wanted - visible)
            for uid in found:
                remembered.put(prefix + uid, True)
            visible |= found
        if study is not None and not shared and study not in visible:
            await self.deny_if_stored(scope, engine, study, "study not visible to the caller")
            raise NotFound(f"no instance matches {describe(params)}")
        for name, uid in references:
            if uid not in visible:
                await self.deny_if_stored(scope, engine, uid,
                                          f"{name}: object not visible to the caller")
                raise NotFound(f"no stored object matches {name}={uid}", parameter=name)

    @staticmethod
    async def deny_if_stored(scope: Scope, engine: Any, uid: str, reason: str) -> None:
        """The answer is the same either way; the audit records a hidden object as denied,
        an unknown one as a plain 404."""
        if await run_in_threadpool(visible_objects, engine, EVERY_STUDY, [uid]):
            scope["state"]["access_denied"] = reason


def filter_key(access: StudyFilter) -> str:
    labels = "\x1f".join(sorted(access.labels)) if access.labels is not None else "*"
    return f"{labels}\x1e{access.study or '*'}\x1e"


def protect(routes: Sequence[BaseRoute], settings: Settings, *, prefix: str = "") -> None:
    """Put every route (inside mounts too) behind the Guard, with its rules by method."""
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            protect(route.routes, settings, prefix=prefix + route.path)
        elif isinstance(route, Route):
            template = prefix + route.path
            route.app = Guard(route.app, rules_for(route.methods or {"GET"}, template, settings),
                              settings)
        elif hasattr(route, "app"):  # a mounted app, a host, a websocket: no rule, admin only
            route.app = Guard(route.app, {}, settings)


def rules_for(methods: Iterable[str], template: str, settings: Settings
              ) -> dict[str, Rule | None]:
    root = settings.root_path
    in_service = template == root or template.startswith(root + "/") or not root
    relative = template[len(root):] or "/" if root and in_service else template
    return {
        method: (permission_rule(method, relative, server=False) if in_service else None)
        or permission_rule(method, template, server=True)
        for method in methods
    }
