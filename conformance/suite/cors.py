"""Cross-origin access for browser viewers (OHIF, Slim): CORS headers (Fetch standard).

PS3.18 does not mandate CORS, but a DICOMweb server without it cannot be used by a
web viewer hosted on another origin, so these checks report it.
"""

from __future__ import annotations

from .client import DICOM_JSON, describe
from .context import Context
from .registry import check, ensure, unsupported

ORIGIN = "http://viewer.example.org"


@check("cors.simple-get", "PS3.18 8.1.1.4 / Fetch", "Access-Control-Allow-Origin on a GET")
def cors_header_on_get(ctx: Context) -> str:
    resp = ctx.client.get("studies?limit=1", accept=DICOM_JSON, Origin=ORIGIN)
    allowed = resp.headers.get("Access-Control-Allow-Origin")
    if allowed is None:
        unsupported(f"no Access-Control-Allow-Origin ({describe(resp)[:40]})")
    ensure(allowed in ("*", ORIGIN), f"Access-Control-Allow-Origin {allowed!r}")
    return f"Access-Control-Allow-Origin: {allowed}"


@check("cors.preflight", "PS3.18 8.1.1.4 / Fetch", "OPTIONS preflight allows GET + Accept")
def cors_preflight(ctx: Context) -> str:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept",
    }
    resp = ctx.client.request("OPTIONS", "studies", headers=headers)
    allowed = resp.headers.get("Access-Control-Allow-Origin")
    if allowed is None:
        unsupported(f"no CORS preflight answer ({describe(resp)[:40]})")
    ensure(resp.status_code in (200, 204), f"preflight answered {describe(resp)}")
    methods = resp.headers.get("Access-Control-Allow-Methods", "")
    ensure("GET" in methods.upper() or methods == "*", f"Allow-Methods {methods!r}")
    return f"{resp.status_code}, methods {methods}"
