"""Retrieve Capabilities (PS3.18 8.9): `OPTIONS` on the service root describes every resource
and method, generated from the route table so it cannot drift from what is served.

WADL (`application/vnd.sun.wadl+xml`) by default, JSON when Accept asks for it.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.negotiation import parse_accept
from dicomweb.urls import service_base_url

WADL = "application/vnd.sun.wadl+xml"
# What each handler produces or consumes, by the handler's name (the transaction's name).
REPRESENTATIONS = {
    "store_instances": ["application/dicom", 'multipart/related; type="application/dicom"'],
    "retrieve_instances": ['multipart/related; type="application/dicom"', "application/dicom"],
    "retrieve_metadata": ["application/dicom+json"],
    "retrieve_frames": [
        'multipart/related; type="application/octet-stream"',
        "image/jpeg",
        "image/jls",
        "image/jp2",
        "image/dicom-rle",
    ],
    "retrieve_bulkdata": [
        "application/octet-stream",
        'multipart/related; type="application/octet-stream"',
    ],
    "delete_resource": ["application/json"],
}


def describe(routes: list[Route]) -> list[dict[str, object]]:
    resources: dict[str, dict[str, object]] = {}
    for route in routes:
        methods = sorted((route.methods or set()) - {"HEAD"})
        name = getattr(route.endpoint, "__name__", "handler")
        entry = resources.setdefault(
            route.path.lstrip("/"), {"path": route.path.lstrip("/"), "methods": []}
        )
        for method in methods:
            media_types = REPRESENTATIONS.get(name)
            if media_types is None:
                media_types = ["application/dicom+json"] if name.startswith("search_for") else []
            entry["methods"].append({"name": method, "id": name, "media_types": media_types})
    return list(resources.values())


def wadl(base: str, resources: list[dict[str, object]]) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<application xmlns="http://wadl.dev.java.net/2009/02">',
        f"  <resources base={quoteattr(base + '/')}>",
    ]
    for resource in resources:
        lines.append(f"    <resource path={quoteattr(str(resource['path']))}>")
        for method in resource["methods"]:  # type: ignore[union-attr]
            lines.append(
                f"      <method name={quoteattr(method['name'])} id={quoteattr(method['id'])}>"
            )
            if method["media_types"]:
                lines.append("        <response>")
                lines += [
                    f"          <representation mediaType={quoteattr(m)}/>"
                    for m in method["media_types"]
                ]
                lines.append("        </response>")
            lines.append("      </method>")
        lines.append("    </resource>")
    lines += ["  </resources>", "</application>", ""]
    return "\n".join(lines)


def capabilities_route(routes: list[Route]) -> Route:
    resources = describe(routes)

    async def retrieve_capabilities(request: Request) -> Response:
        base = service_base_url(request, request.app.state.settings)
        ranges = parse_accept(request.headers.get("accept"))
        wants_json = any(
            r.media_type in ("application/json", "application/dicom+json") for r in ranges
        ) and not any(r.media_type == WADL for r in ranges)
        allow = {"Allow": "GET, POST, DELETE, OPTIONS"}
        if wants_json:
            body = orjson.dumps({"base": base, "resources": resources})
            return Response(body, media_type="application/json", headers=allow)
        return Response(wadl(base, resources), media_type=WADL, headers=allow)

    return Route("/", retrieve_capabilities, methods=["OPTIONS"])
