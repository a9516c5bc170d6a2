"""Access control and audit: who is asking (a Principal, resolved once per request), what they
may do (one authorization function), and the record of what they did.

The contract the rest of the application relies on: the principal of a request is
`principal_of(request)` (stored by the access middleware in `scope["state"]["principal"]`);
without authentication configured it is `ANONYMOUS`, which may do everything.

What a principal may see is the store's `StudyFilter` (`study_filter(principal, settings)`),
which the store composes into its queries; what it stores into, `study_writer(...)`. DIMSE
builds its principal with `configured_principal` and uses the same two functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

from dicomweb.config import Settings
from dicomweb.store.access import ANY_WRITER, EVERY_STUDY, StudyFilter, StudyWriter

READ = "dicomweb:read"
WRITE = "dicomweb:write"
DELETE = "dicomweb:delete"
ADMIN = "dicomweb:admin"
ALL_SCOPES = frozenset({READ, WRITE, DELETE, ADMIN})


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    kind: Literal["anonymous", "oidc", "apikey", "share", "dimse"]
    #: Token `sub`, API key name, share id, DIMSE calling AE title, or "anonymous".
    subject: str
    scopes: frozenset[str]
    #: The caller's study labels (token claim, API key, DIMSE configuration): the studies it
    #: stores get them, and with `--study-access labels` it sees only studies carrying one.
    #: None: no labels at all (anonymous callers, share links).
    labels: frozenset[str] | None = None
    #: OAuth client (`azp` / `client_id` claim) of a token.
    client_id: str | None = None
    #: A share link's one study.
    study: str | None = None

    def has(self, scope: str) -> bool:
        """Whether the principal holds `scope`; dicomweb:admin holds every scope."""
        return scope in self.scopes or ADMIN in self.scopes


ANONYMOUS = Principal("anonymous", "anonymous", ALL_SCOPES)
#: A caller without credentials on a server that requires them: may do nothing.
UNAUTHENTICATED = Principal("anonymous", "anonymous", frozenset(), frozenset())


def principal_of(connection: HTTPConnection) -> Principal:
    return connection.scope.get("state", {}).get("principal", ANONYMOUS)


def study_filter(principal: Principal, settings: Settings) -> StudyFilter:
    """The studies `principal` may see: a share link's one study; with `--study-access
    labels`, those carrying one of its labels (admins and anonymous open access see all)."""
    if principal.study is not None:
        return StudyFilter(study=principal.study)
    if settings.study_access == "all" or ADMIN in principal.scopes:
        return EVERY_STUDY  # ANONYMOUS (open access) holds dicomweb:admin too
    return StudyFilter(labels=principal.labels or frozenset())


def study_writer(principal: Principal, settings: Settings) -> StudyWriter:
    """How `principal` stores: its labels go to the studies, and it adds only to studies it
    may see (or that carry no label yet)."""
    labels = principal.labels or frozenset()
    studies = study_filter(principal, settings)
    if not labels and studies.unrestricted:
        return ANY_WRITER
    return StudyWriter(labels=labels, studies=studies)


def configured_principal(kind: Literal["dimse", "apikey"], subject: str,
                         scopes: Iterable[str], labels: Iterable[str] | None = None
                         ) -> Principal:
    """A principal from configuration (e.g. a DIMSE peer's AE title, its scopes and labels)."""
    return Principal(kind, subject, frozenset(scopes),
                     frozenset(labels) if labels is not None else frozenset())


def study_filter_of(connection: HTTPConnection) -> StudyFilter:
    """The studies the caller of this request may see (computed once, by the guard)."""
    found = connection.scope.get("state", {}).get("study_filter")
    if found is not None:
        return found
    return study_filter(principal_of(connection), connection.app.state.settings)


def study_writer_of(connection: HTTPConnection) -> StudyWriter:
    return study_writer(principal_of(connection), connection.app.state.settings)
