"""Retrieve Capabilities transaction (PS3.18 8.9): ``OPTIONS`` on the service root."""

from __future__ import annotations

from .client import describe, media_type
from .context import Context
from .registry import UNSUPPORTED_STATUSES, check, ensure, unsupported


@check("capabilities.options-root", "PS3.18 8.9", "OPTIONS on the root describes the service")
def capabilities_options_root(ctx: Context) -> str:
    """PS3.18 8.9: ``OPTIONS {+service}`` returns a WADL or JSON description (optional)."""
    resp = ctx.client.request("OPTIONS", "", headers={"Accept": "application/vnd.sun.wadl+xml"})
    if resp.status_code in UNSUPPORTED_STATUSES or resp.status_code == 400:
        unsupported(describe(resp)[:60])
    ensure(resp.status_code == 200, describe(resp))
    ctype = media_type(resp.headers.get("Content-Type", ""))
    if not resp.content.strip():
        unsupported(f"200 with an empty body (Allow: {resp.headers.get('Allow', '-')})")
    return f"{ctype}, {len(resp.content)} bytes"
