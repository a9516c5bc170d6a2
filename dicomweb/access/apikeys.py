"""API keys for modalities, gateways and scripts: `dicomweb apikey create|list|revoke`.

A key is shown once, when it is made; the database keeps only its SHA-256, so every worker and
host can check it and nobody can read it back. A check is one indexed lookup, then trusted for
`credential_cache_seconds` (a revocation reaches other processes within that delay).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.exc import IntegrityError

from dicomweb.access import ALL_SCOPES, Principal
from dicomweb.access.cache import ExpiringCache
from dicomweb.access.errors import InvalidCredentials
from dicomweb.access.tables import ApiKey

KEY_PREFIX = "dwk_"
API_KEYS = ApiKey.__table__
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class ApiKeyError(ValueError):
    """A create or revoke that cannot be done; the message is one line for the operator."""


@dataclass(frozen=True)
class ApiKeyInfo:
    name: str
    scopes: tuple[str, ...]
    labels: tuple[str, ...]
    created_at: str
    expires_at: int | None

    def principal(self) -> Principal:
        return Principal("apikey", self.name, frozenset(self.scopes), frozenset(self.labels))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_words(text: str | Iterable[str]) -> list[str]:
    items = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text)
    return [item for item in items if item]


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    scopes = split_words(text)
    if not scopes:
        raise ApiKeyError(f"--scopes needs at least one of {', '.join(sorted(ALL_SCOPES))}")
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise ApiKeyError(f"unknown scope {unknown[0]!r}: use {', '.join(sorted(ALL_SCOPES))}")
    return tuple(sorted(set(scopes)))


def parse_labels(text: str | Iterable[str] | None) -> tuple[str, ...]:
    labels = split_words(text or "")
    for label in labels:
        if not LABEL.fullmatch(label):
            raise ApiKeyError(f"label {label!r}: letters, digits, '_', '.', ':' and '-', "
                              "up to 64 characters")
    return tuple(sorted(set(labels)))


def create_key(engine: Engine, name: str, scopes: str | Iterable[str],
               labels: str | Iterable[str] | None = None,
               expires_days: int | None = None) -> tuple[str, ApiKeyInfo]:
    """A new key (shown only now) and what was stored about it."""
    if not NAME.fullmatch(name):
        raise ApiKeyError(f"name {name!r}: letters, digits, '.', '_', '@' and '-'")
    scope_list, label_list = parse_scopes(scopes), parse_labels(labels)
    if expires_days is not None and expires_days < 1:
        raise ApiKeyError("--expires-days must be at least 1")
    expires_at = int(time.time()) + expires_days * 86400 if expires_days else None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with engine.begin() as connection:
            connection.execute(API_KEYS.insert(), {
                "name": name, "key_hash": key_hash(key), "scopes": " ".join(scope_list),
                "labels": " ".join(label_list), "expires_at": expires_at})
    except IntegrityError:
        raise ApiKeyError(f"an API key named {name!r} exists; revoke it first or choose "
                          "another name") from None
    found = [k for k in list_keys(engine) if k.name == name]
    return key, found[0]


def list_keys(engine: Engine) -> list[ApiKeyInfo]:
    with engine.connect() as connection:
        rows = connection.execute(select(
            API_KEYS.c.name, API_KEYS.c.scopes, API_KEYS.c.labels, API_KEYS.c.created_at,
            API_KEYS.c.expires_at).order_by(API_KEYS.c.name)).all()
    return [info_of(*row) for row in rows]


def info_of(name: str, scopes: str, labels: str, created_at: object,
            expires_at: int | None) -> ApiKeyInfo:
    created = created_at.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(created_at, "strftime") \
        else str(created_at)
    return ApiKeyInfo(name, tuple(scopes.split()), tuple(labels.split()), created, expires_at)


def revoke_key(engine: Engine, name: str) -> bool:
    with engine.begin() as connection:
        return bool(connection.execute(delete(API_KEYS).where(API_KEYS.c.name == name)).rowcount)


def any_key(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(select(exists().where(API_KEYS.c.name.is_not(None))))
                    .scalar())


class ApiKeys:
    """Checks keys for the running server."""

    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self._cache: ExpiringCache[ApiKeyInfo] = ExpiringCache(cache_seconds)

    def cached(self, key: str) -> Principal | None:
        info = self._cache.get(key_hash(key))
        if info is None:
            return None
        return self._valid(info).principal()

    def lookup(self, key: str) -> Principal:
        """The key's principal; InvalidCredentials if it is unknown, revoked or expired."""
        digest = key_hash(key)
        with self.engine.connect() as connection:
            row = connection.execute(select(
                API_KEYS.c.name, API_KEYS.c.scopes, API_KEYS.c.labels, API_KEYS.c.created_at,
                API_KEYS.c.expires_at).where(API_KEYS.c.key_hash == digest)).first()
        if row is None:
            raise InvalidCredentials("unknown or revoked API key")
        info = self._valid(info_of(*row))
        left = info.expires_at - time.time() if info.expires_at else None
        self._cache.put(digest, info, left)
        return info.principal()

    @staticmethod
    def _valid(info: ApiKeyInfo) -> ApiKeyInfo:
        if info.expires_at is not None and info.expires_at <= time.time():
            raise InvalidCredentials("the API key has expired")
        return info
