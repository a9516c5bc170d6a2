"""Who is asking: the credentials of a request become its Principal, once, before routing.

Credentials come from `Authorization: Bearer …`, from HTTP Basic (the password; any user
name), or from a `token=` query parameter on GET/HEAD (share links and OpenID Connect tokens;
API keys are long-lived and belong in a header). The parameter is taken out of the query
string, so no handler, log line or echoed URL ever holds it. The prefix says what a
credential is: `dwk_` an API key, `dws_` a share link, anything else an OpenID Connect JWT.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from urllib.parse import unquote_plus

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomweb.access import ANONYMOUS, UNAUTHENTICATED, Principal
from dicomweb.access.apikeys import KEY_PREFIX, ApiKeys, any_key
from dicomweb.access.cache import ExpiringCache
from dicomweb.access.errors import InvalidCredentials
from dicomweb.access.oidc import OidcVerifier
from dicomweb.access.shares import SHARE_PREFIX, Shares
from dicomweb.config import Settings
from dicomweb.store.repository import Store

log = logging.getLogger("dicomweb.access")

TOKEN_PARAMETERS = ("token", "access_token")
SAFE_METHODS = ("GET", "HEAD")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AccessControl:
    """The running server's authentication: verifiers, and whether anonymous callers get in."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.oidc = (
            OidcVerifier(settings.oidc_issuer, settings.oidc_audience or "",
                         roles_claim=settings.oidc_roles_claim,
                         labels_claim=settings.oidc_labels_claim)
            if settings.oidc_issuer else None
        )
        self.api_keys = ApiKeys(store.engine, settings.credential_cache_seconds)
        self.shares = Shares(store.engine, settings.credential_cache_seconds)
        self._open: ExpiringCache[bool] = ExpiringCache(settings.credential_cache_seconds)
        #: Objects (UIDs) a study filter was found to see; see authorize.Guard.
        self.visible: ExpiringCache[bool] = ExpiringCache(settings.credential_cache_seconds,
                                                          max_entries=65536)

    def start(self) -> None:
        """At start-up (in a worker thread): fetch the provider's keys, say the mode."""
        if self.oidc is not None:
            self.oidc.refresh(force=True)
        self.shares.secret()  # read (or made) now, not on the event loop at the first link
        if self.settings.allow_anonymous:
            log.warning("anonymous access is allowed (--allow-anonymous): anyone who can reach "
                        "%s:%d can read, store and delete every study", self.settings.host,
                        self.settings.port)

    def anonymous_is_open(self) -> bool | None:
        """Whether callers without credentials may do everything; None: ask the database."""
        settings = self.settings
        if settings.allow_anonymous:
            return True
        if settings.oidc_issuer or not is_loopback(settings.host):
            return False
        return self._open.get("open")

    def check_open(self) -> bool:
        """Loopback without an issuer stays open until the first API key exists."""
        found = not any_key(self.store.engine)
        self._open.put("open", found)
        return found

    async def anonymous(self) -> Principal:
        is_open = self.anonymous_is_open()
        if is_open is None:
            is_open = await run_in_threadpool(self.check_open)
        return ANONYMOUS if is_open else UNAUTHENTICATED

    @property
    def required(self) -> bool:
        """Whether authentication is on for sure (an issuer, or a non-loopback address)."""
        return not self.settings.allow_anonymous and (
            bool(self.settings.oidc_issuer) or not is_loopback(self.settings.host))

    async def principal(self, credential: str, *, in_query: bool) -> Principal:
        """The principal of a credential; InvalidCredentials saying why not."""
        if credential.startswith(SHARE_PREFIX):
            return self.shares.cached(credential) or await run_in_threadpool(
                self.shares.lookup, credential)
        if credential.startswith(KEY_PREFIX):
            if in_query:
                raise InvalidCredentials("API keys go in the Authorization header, not the URL")
            return self.api_keys.cached(credential) or await run_in_threadpool(
                self.api_keys.lookup, credential)
        if self.oidc is None:
            raise InvalidCredentials("not an API key or share link, and this server accepts "
                                     "no OpenID Connect tokens")
        if self.oidc.needs_keys(credential):
            await run_in_threadpool(self.oidc.refresh)
        return self.oidc.verify(credential)


def credential_of(scope: Scope) -> tuple[str | None, bool, str | None]:
    """(credential, whether it came from the query, problem), taking any token parameter out
    of the query string."""
    query = scope.get("query_string", b"")
    from_query: str | None = None
    if query and any(name.encode() in query for name in TOKEN_PARAMETERS):
        kept = []
        for piece in query.split(b"&"):
            name, _, value = piece.partition(b"=")
            if unquote_plus(name.decode("latin-1")) in TOKEN_PARAMETERS:
                from_query = from_query or unquote_plus(value.decode("latin-1"))
            else:
                kept.append(piece)  # other parameters stay exactly as sent
        scope["query_string"] = b"&".join(kept)
    header = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header = value.decode("latin-1").strip()
            break
    if header is not None:
        return bearer_or_basic(header)
    if from_query is not None:
        if scope.get("method") not in SAFE_METHODS:
            return None, True, "a token in the URL is accepted on GET and HEAD only"
        return from_query, True, None
    return None, False, None


def bearer_or_basic(header: str) -> tuple[str | None, bool, str | None]:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value, False, None
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, False, "malformed HTTP Basic credentials"
        _, colon, password = decoded.partition(":")
        if colon and password:
            return password, False, None
        return None, False, "HTTP Basic credentials need the API key as the password"
    return None, False, "the Authorization header must be Bearer (or Basic with an API key)"


class Authentication:
    """ASGI middleware: `scope["state"]["principal"]` for every HTTP request, and, when the
    credentials were refused, `scope["state"]["credential_error"]` (the authorization guard
    answers 401 with it on every route that is not public)."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        credential, in_query, problem = credential_of(scope)
        if problem is not None:
            state["principal"], state["credential_error"] = UNAUTHENTICATED, problem
        elif credential is None:
            state["principal"] = await self.access.anonymous()
        else:
            try:
                state["principal"] = await self.access.principal(credential, in_query=in_query)
            except InvalidCredentials as refused:
                state["principal"] = UNAUTHENTICATED
                state["credential_error"] = refused.description
        await self.app(scope, receive, send)
