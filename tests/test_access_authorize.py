"""The one authorization function over the whole route table: every route is in the
permission table, none answers anonymously when authentication is on, a missing scope is a
403 naming it, and a route nobody listed needs dicomweb:admin (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import access_setup
import pytest
import requests
from access_setup import Caller, auth_settings, concrete, route_table
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from dicomweb.access import ADMIN, ALL_SCOPES, READ, WRITE, Principal
from dicomweb.access.authorize import PUBLIC, RULES, UNLISTED, protect, rules_for
from dicomweb.config import Settings
from dicomweb.errors import DicomWebError

auth_server = access_setup.auth_server  # fixture

#: What stays open with authentication on, and why (README "Access control"): health checks
#: for load balancers, and the viewer's files and app-config.js so OHIF can show its login.
PUBLIC_ROUTES = {("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/readyz"),
                 ("HEAD", "/readyz"), ("GET", "/{path:path}"), ("HEAD", "/{path:path}")}


@pytest.fixture(scope="module")
def table(oidc_provider, tmp_path_factory) -> list[tuple[str, str]]:
    return route_table(auth_settings(oidc_provider), tmp_path_factory.mktemp("table"))


def permission(settings: Settings, method: str, template: str) -> str:
    found = rules_for([method], template, settings)[method]
    return found.permission if found else UNLISTED


def test_every_route_is_in_the_permission_table(table, oidc_provider) -> None:
    settings = auth_settings(oidc_provider)
    unlisted = [(m, t) for m, t in table if rules_for([m], t, settings)[m] is None]
    assert not unlisted, f"routes without a rule (they would need admin): {unlisted}"
    public = {(m, t) for m, t in table if permission(settings, m, t) == PUBLIC}
    expected = {(m, t) for m, t in PUBLIC_ROUTES if settings.viewer or "{path" not in t}
    assert public == expected
    # The issue's scopes, checked on the table itself.
    assert permission(settings, "POST", "/dicomweb/studies") == WRITE
    assert permission(settings, "DELETE", "/dicomweb/studies/{study}") == "dicomweb:delete"
    assert permission(settings, "GET", "/dicomweb/studies/{study}/labels") == ADMIN
    assert permission(settings, "PUT", "/dicomweb/studies/{study}/labels/{label}") == ADMIN
    assert permission(settings, "GET", "/dicomweb/audit") == ADMIN
    for method, template in table:
        if method in ("GET", "HEAD") and template.startswith("/dicomweb/studies/{study}") \
                and "/labels" not in template:
            assert permission(settings, method, template) == READ, template


def test_the_table_fails_closed() -> None:
    settings = Settings()
    assert rules_for(["PATCH"], "/dicomweb/studies/{study}", settings)["PATCH"] is None
    assert rules_for(["GET"], "/dicomweb/something-new", settings)["GET"] is None
    assert rules_for(["POST"], "/dicomweb/studies/{study}/rt", settings)["POST"] is None
    assert all(r.permission in ALL_SCOPES | {PUBLIC} for r in RULES)


def principal_app(principal: Principal) -> Starlette:
    """Routes nobody listed, behind the guard, called by `principal`."""

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hello")

    class Fixed:
        def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
            self.app = app

        async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)

    async def error(request, exc):  # type: ignore[no-untyped-def]
        return PlainTextResponse(exc.message, status_code=exc.status_code)

    routes = [Mount("/dicomweb", routes=[Route("/new-thing", hello),
                                         Route("/studies/{study}/poke", hello, methods=["POST"])]),
              Mount("/mounted", app=PlainTextResponse("hello"))]
    protect(routes, Settings())
    return Starlette(routes=routes, middleware=[Middleware(Fixed)],
                     exception_handlers={DicomWebError: error})


@pytest.mark.parametrize("path,method", [("/dicomweb/new-thing", "GET"),
                                         ("/dicomweb/studies/1.2.3/poke", "POST"),
                                         ("/mounted/anything", "GET")])
def test_an_unlisted_route_needs_admin(path: str, method: str) -> None:
    everything_but_admin = Principal("oidc", "u", ALL_SCOPES - {ADMIN}, None)
    refused = TestClient(principal_app(everything_but_admin)).request(method, path)
    assert refused.status_code == 403 and ADMIN in refused.text
    admin = Principal("oidc", "a", frozenset({ADMIN}), None)
    assert TestClient(principal_app(admin)).request(method, path).text == "hello"


def send(method: str, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.request(method, url, headers=headers or {}, timeout=30,
                            allow_redirects=False)


def test_no_route_answers_anonymously(auth_server, table, oidc_provider) -> None:
    settings = auth_settings(oidc_provider)
    checked = 0
    for method, template in table:
        url = auth_server.origin + concrete(template)
        anonymous = send(method, url)
        if permission(settings, method, template) == PUBLIC:
            assert anonymous.status_code != 401, (method, template)
            continue
        checked += 1
        assert anonymous.status_code == 401, (method, template, anonymous.status_code)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer"), template
        forged = send(method, url, {"Authorization": "Bearer not.a.token"})
        assert forged.status_code == 401, (method, template)
        assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]
    assert checked >= 40  # core, pixels, RT, capabilities, labels, shares


def test_a_missing_scope_is_a_403_naming_it(auth_server, table, oidc_provider) -> None:
    settings = auth_settings(oidc_provider)
    nothing = Caller(oidc_provider, "nothing")  # a valid token without any dicomweb scope
    for method, template in table:
        needed = permission(settings, method, template)
        if needed == PUBLIC:
            continue
        response = send(method, auth_server.origin + concrete(template), nothing.headers)
        assert response.status_code == 403, (method, template, response.status_code)
        challenge = response.headers["WWW-Authenticate"]
        assert 'error="insufficient_scope"' in challenge and f'scope="{needed}"' in challenge
        if method != "HEAD":
            assert needed in response.json()["error"]["message"]


def test_scopes_grant_what_the_issue_says(auth_server, oidc_provider) -> None:
    base = auth_server.url
    study = concrete("/{study}").lstrip("/")
    reader = Caller(oidc_provider, "reader-a")
    writer = Caller(oidc_provider, "writer-a")
    deleter = Caller(oidc_provider, "deleter-a")
    by_roles = Caller(oidc_provider, "roles-reader-a")  # dicomweb:read from the `roles` claim
    for caller in (reader, writer, deleter, by_roles):
        assert caller.get(f"{base}/studies").status_code in (200, 204)
    for caller in (reader, deleter, by_roles):
        assert caller.request("POST", f"{base}/studies").status_code == 403
    for caller in (reader, writer, by_roles):
        assert caller.request("DELETE", f"{base}/studies/{study}").status_code == 403
        assert caller.get(f"{base}/studies/{study}/labels").status_code == 403
    assert writer.request("POST", f"{base}/studies").status_code == 415  # past the guard
    assert deleter.request("DELETE", f"{base}/studies/{study}").status_code == 404
    admin = Caller(oidc_provider, "admin")
    assert admin.get(f"{base}/studies/{study}/labels").status_code == 404
    assert admin.request("DELETE", f"{base}/studies/{study}").status_code == 404


def test_health_and_capabilities(auth_server, oidc_provider) -> None:
    assert send("GET", f"{auth_server.origin}/healthz").status_code == 200
    assert send("GET", f"{auth_server.origin}/readyz").status_code == 200
    # Bad credentials do not matter where none are needed.
    bad = {"Authorization": "Bearer nonsense"}
    assert send("GET", f"{auth_server.origin}/healthz", bad).status_code == 200
    assert send("OPTIONS", f"{auth_server.url}/").status_code == 401
    reader = Caller(oidc_provider, "reader-a")
    assert reader.request("OPTIONS", f"{auth_server.url}/").status_code == 200


def test_routes_of_this_test_match_the_server(table, auth_server) -> None:
    """The table walked in-process is the one the server serves (same settings)."""
    assert any(t.endswith("/mpr/{plane}") for _, t in table)
    assert any("/rt/" in t for _, t in table)
    assert ("OPTIONS", "/dicomweb/") in table
    assert Path(auth_server.data_dir).is_dir()
