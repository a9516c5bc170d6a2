"""The service's absolute base URL as the client sees it (behind reverse proxies too).

Forwarded (RFC 7239) and X-Forwarded-* headers are believed only from peers in
`forwarded_allow_ips` (the `TrustedProxies` middleware marks the request); every part taken
from a header must be well-formed (http or https, a host name or address with an optional
port, a plain path prefix), so the URL can be put into JSON, JavaScript or a header as it is.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from dicomweb.config import Settings

SCHEMES = ("http", "https")
#: RFC 3986 host (reg-name of letters, digits, `-`, `.`, `_`; IPv4; bracketed IPv6), then port.
HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?"
)
PORT = re.compile(r"[0-9]{1,5}")
#: A path prefix of unreserved characters and sub-delimiters that need no quoting in JSON.
PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")
TRUSTED_KEY = "forwarded_trusted"


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


def valid_scheme(value: str | None) -> str | None:
    return value.lower() if value and value.lower() in SCHEMES else None


def valid_host(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) <= MAX_HOST_LENGTH:
        return value if host_is_valid(value) else None
    return None  # longer than any host name with a port


#: RFC 1035 name (253) plus a port; a longer value never matches HOST.
MAX_HOST_LENGTH = 260


@lru_cache(maxsize=256)
def host_is_valid(value: str) -> bool:
    """HOST checked once per distinct value (clients send the same Host on every request)."""
    return HOST.fullmatch(value) is not None


def service_base_url(request: Request, settings: Settings) -> str:
    """`public_root` if configured, else (from trusted proxies only) Forwarded /
    X-Forwarded-* headers, else the request's own scheme and Host; then the mount path."""
    if settings.public_root:
        return settings.public_root
    headers = request.headers
    scheme = valid_scheme(request.scope.get("scheme")) or "http"  # not request.url: parses
    host = valid_host(headers.get("host")) or server_address(request)
    prefix = ""
    if request.scope.get("state", {}).get(TRUSTED_KEY):
        if forwarded := headers.get("forwarded"):
            pairs = forwarded_pairs(forwarded)
            scheme = valid_scheme(pairs.get("proto")) or scheme
            host = valid_host(pairs.get("host")) or host
        else:
            scheme = valid_scheme(first(headers.get("x-forwarded-proto"))) or scheme
            host = valid_host(first(headers.get("x-forwarded-host"))) or host
            port = first(headers.get("x-forwarded-port")) or ""
            default = {"http": "80", "https": "443"}[scheme]
            if PORT.fullmatch(port) and port != default and not re.search(r":\d*$", host):
                host = f"{host}:{port}"
        candidate = (first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
        prefix = candidate if PREFIX.fullmatch(candidate) else ""
    return f"{scheme}://{host}{prefix}{settings.root_path}"


def server_address(request: Request) -> str:
    """The listening address, when the Host header is missing or malformed."""
    server = request.scope.get("server")
    if not server:
        return "localhost"
    host, port = server[0], server[1]
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host}:{port}" if port else host


def json_text(url: str) -> bytes:
    """`url` as it goes between the quotes of a JSON string."""
    return orjson.dumps(url)[1:-1]


class TrustedProxies:
    """Outermost middleware: marks whether the peer is a trusted proxy (so its Host-rewriting
    headers count) and, for those, lets uvicorn's ProxyHeadersMiddleware set the ASGI client
    address and scheme from X-Forwarded-For / X-Forwarded-Proto, as `uvicorn
    --forwarded-allow-ips` would (`dicomweb serve` turns uvicorn's own off)."""

    def __init__(self, app: ASGIApp, allow: tuple[str, ...]) -> None:
        self.allow_any = "*" in allow
        self.networks = [ipaddress.ip_network(item, strict=False) for item in allow
                         if item != "*" and _is_address(item)]
        self.names = {item for item in allow if item != "*" and not _is_address(item)}
        self.app = app
        self.proxy = ProxyHeadersMiddleware(app, trusted_hosts=list(allow))  # type: ignore[arg-type]
        #: Peer address -> trusted: parsing it (twice, with uvicorn's check) on every request
        #: was a tenth of a cached frame's Python time. Bounded; past the bound, computed.
        self.known: dict[str, bool] = {}

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return False
        found = self.known.get(host)
        if found is None:
            found = self.decide(host)
            if len(self.known) < MAX_KNOWN_PEERS:
                self.known[host] = found
        return found

    def decide(self, host: str) -> bool:
        if self.allow_any or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.proxy(scope, receive, send)  # type: ignore[arg-type]
            return
        client = scope.get("client")
        trusted = self.trusts(client[0] if client else None)
        scope.setdefault("state", {})[TRUSTED_KEY] = trusted
        if any(name in PROXY_HEADERS for name, _ in scope.get("headers", ())):
            await self.proxy(scope, receive, send)  # type: ignore[arg-type]  # it decides
            return
        # Neither header: uvicorn's middleware would change nothing (it reads only these
        # two), so it is not called.
        await self.app(scope, receive, send)


#: The only headers ProxyHeadersMiddleware acts on.
PROXY_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto")
MAX_KNOWN_PEERS = 4096


def _is_address(item: str) -> bool:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False
    return True
