"""The service's absolute base URL as the client sees it (behind reverse proxies too)."""

from __future__ import annotations

from starlette.requests import Request

from dicomweb.config import Settings


def first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


def forwarded_pairs(header: str) -> dict[str, str]:
    """RFC 7239: the first element of `Forwarded` (the proxy nearest the client)."""
    pairs = {}
    for item in header.split(",")[0].split(";"):
        name, _, value = item.partition("=")
        if value:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def service_base_url(request: Request, settings: Settings) -> str:
    """`public_root` if configured, else Forwarded / X-Forwarded-* headers, else the request's
    own scheme and host; followed by the mount path."""
    if settings.public_root:
        return settings.public_root
    headers = request.headers
    scheme = request.scope.get("scheme") or "http"  # request.url would parse the whole URL
    host = headers.get("host") or request.url.netloc
    prefix = ""
    if forwarded := headers.get("forwarded"):
        pairs = forwarded_pairs(forwarded)
        scheme = pairs.get("proto", scheme)
        host = pairs.get("host", host)
    else:
        scheme = first(headers.get("x-forwarded-proto")) or scheme
        host = first(headers.get("x-forwarded-host")) or host
        if (port := first(headers.get("x-forwarded-port"))) and ":" not in host:
            default = {"http": "80", "https": "443"}.get(scheme)
            if port != default:
                host = f"{host}:{port}"
    prefix = (first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
    return f"{scheme}://{host}{prefix}{settings.root_path}"
