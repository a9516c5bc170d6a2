"""The route index picks exactly the route Starlette's scan of every route would pick."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Match, Mount, Route

from dicomweb.app import create_app
from dicomweb.config import Settings
from dicomweb.routing import IndexedRouter, RouteIndex

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")


def scanned(routes: list[BaseRoute], scope: dict) -> BaseRoute | None:
    """Starlette's rule: the first full match, else the first partial one (405)."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def indexed(index: RouteIndex, scope: dict) -> BaseRoute | None:
    return scanned(index.candidates(scope["path"]), scope)


def sample_paths(routes: list[BaseRoute]) -> list[str]:
    """Each template with its parameters filled in, with a trailing slash, with a segment more
    and one less, and a few that match nothing."""
    paths = {"/", "", "/nothing", "/studies/", "//studies", "/studies//series"}
    for route in routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}:]+:path\}", "a/b/c", route.path)
            path = re.sub(r"\{[^}]+\}", "1.2.840.1", path)
            paths |= {path, path + "/", path + "/extra", path.rsplit("/", 1)[0]}
    return sorted(paths)


@pytest.mark.parametrize("root_path", ["/dicomweb", ""])
def test_same_route_as_the_full_scan(tmp_path: Path, root_path: str) -> None:
    app = create_app(Settings(data_dir=tmp_path, root_path=root_path, viewer=False))
    assert isinstance(app.router, IndexedRouter)
    router = app.router
    if root_path:
        (mount,) = [r for r in app.router.routes if isinstance(r, Mount)]
        router = mount.app
    assert isinstance(router, IndexedRouter)
    routes = list(router.routes)
    index = RouteIndex(routes)
    checked = 0
    for path in sample_paths(routes):
        for method in METHODS:
            scope = {"type": "http", "method": method, "path": path, "root_path": "",
                     "headers": []}
            assert indexed(index, scope) is scanned(routes, scope), (method, path)
            checked += 1
    assert checked > 500


def test_frames_request_tries_few_routes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    (mount,) = [r for r in app.router.routes if isinstance(r, Mount)]
    candidates = mount.app.route_index().candidates(
        "/studies/1.2/series/3.4/instances/5.6/frames/1")
    assert len(candidates) <= 3 < len(mount.app.routes)
    assert candidates[0].path.endswith("/frames/{frames}")
