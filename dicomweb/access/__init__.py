"""Access control and audit: who is asking (a Principal, resolved once per request), what they
may do (one authorization function), and the record of what they did.

The contract the rest of the application relies on: the principal of a request is
`principal_of(request)` (stored by the access middleware in `scope["state"]["principal"]`);
without authentication configured it is `ANONYMOUS`, which may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

READ = "dicomweb:read"
WRITE = "dicomweb:write"
DELETE = "dicomweb:delete"
ADMIN = "dicomweb:admin"
ALL_SCOPES = frozenset({READ, WRITE, DELETE, ADMIN})


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    kind: Literal["anonymous", "oidc", "apikey", "share", "dimse"]
    #: Token `sub`, API key name, share id, or "anonymous".
    subject: str
    scopes: frozenset[str]
    #: Study labels the caller may see; None means every study.
    labels: frozenset[str] | None = None
    #: OAuth client (`azp` / `client_id` claim) of a token.
    client_id: str | None = None
    #: A share link's one study.
    study: str | None = None


ANONYMOUS = Principal("anonymous", "anonymous", ALL_SCOPES)


def principal_of(connection: HTTPConnection) -> Principal:
    return connection.scope.get("state", {}).get("principal", ANONYMOUS)
