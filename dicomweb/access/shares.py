"""Share links: a signed, expiring, revocable token granting dicomweb:read on one study.

The token is `dws_` + a JWT (HS256) signed with a secret kept in the database, so every worker
and host can check it; its share id is looked up (then trusted for `credential_cache_seconds`)
so that `DELETE /shares/{id}` revokes it. The OpenID Connect verifier never sees these tokens
(the prefix decides), and never accepts HMAC algorithms.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

import jwt
from sqlalchemy import Engine, select, update

from dicomweb.access import READ, Principal
from dicomweb.access.cache import ExpiringCache
from dicomweb.access.errors import InvalidCredentials
from dicomweb.access.tables import AccessSecret, Share

SHARE_PREFIX = "dws_"
SHARES = Share.__table__
SECRETS = AccessSecret.__table__
SECRET_NAME = "share-signing-key"
AUDIENCE = "dicomweb-share"
ALGORITHM = "HS256"
DEFAULT_SECONDS = 7 * 86400


@dataclass(frozen=True)
class CreatedShare:
    id: str
    token: str
    expires_at: int
    study: str


def owner_of(principal: Principal) -> str:
    return f"{principal.kind}:{principal.subject}"


class Shares:
    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self._secret: bytes | None = None
        self._lock = threading.Lock()
        self._cache: ExpiringCache[str] = ExpiringCache(cache_seconds)

    def secret(self) -> bytes:
        """The signing secret: made once by whichever process needs it first."""
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = self._load_or_make_secret()
        return self._secret

    def _load_or_make_secret(self) -> bytes:
        query = select(SECRETS.c.value).where(SECRETS.c.name == SECRET_NAME)
        with self.engine.begin() as connection:
            found = connection.execute(query).scalar()
            if found is None:
                if connection.dialect.name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                connection.execute(insert(SECRETS).on_conflict_do_nothing(
                    index_elements=["name"]), {"name": SECRET_NAME,
                                               "value": secrets.token_bytes(32)})
                found = connection.execute(query).scalar()
        return bytes(found)

    def create(self, study: str, creator: Principal, seconds: int) -> CreatedShare:
        share_id = secrets.token_hex(16)
        now = int(time.time())
        expires_at = now + seconds
        with self.engine.begin() as connection:
            connection.execute(SHARES.insert(), {
                "id": share_id, "study_instance_uid": study, "created_by": owner_of(creator),
                "expires_at": expires_at})
        claims = {"sid": share_id, "study": study, "iat": now, "exp": expires_at,
                  "aud": AUDIENCE}
        token = SHARE_PREFIX + jwt.encode(claims, self.secret(), algorithm=ALGORITHM)
        return CreatedShare(share_id, token, expires_at, study)

    def claims(self, token: str) -> dict[str, object]:
        """The verified claims of a share token (signature, expiry); no database."""
        try:
            claims = jwt.decode(token.removeprefix(SHARE_PREFIX), self.secret(),
                                algorithms=[ALGORITHM], audience=AUDIENCE,
                                options={"require": ["exp", "sid", "study"]})
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the share link has expired") from None
        except jwt.PyJWTError:
            raise InvalidCredentials("the share link is not valid") from None
        if not isinstance(claims.get("sid"), str) or not isinstance(claims.get("study"), str):
            raise InvalidCredentials("the share link is not valid")
        return claims

    def cached(self, token: str) -> Principal | None:
        claims = self.claims(token)
        study = self._cache.get(str(claims["sid"]))
        return self._principal(claims) if study == claims["study"] else None

    def lookup(self, token: str) -> Principal:
        """The share's principal; InvalidCredentials if revoked, expired or forged."""
        claims = self.claims(token)
        share_id = str(claims["sid"])
        with self.engine.connect() as connection:
            row = connection.execute(select(
                SHARES.c.study_instance_uid, SHARES.c.expires_at, SHARES.c.revoked_at,
            ).where(SHARES.c.id == share_id)).first()
        if row is None or row.revoked_at is not None:
            raise InvalidCredentials("the share link has been revoked")
        if row.study_instance_uid != claims["study"] or row.expires_at <= time.time():
            raise InvalidCredentials("the share link is not valid")
        self._cache.put(share_id, row.study_instance_uid, row.expires_at - time.time())
        return self._principal(claims)

    @staticmethod
    def _principal(claims: dict[str, object]) -> Principal:
        return Principal("share", str(claims["sid"]), frozenset({READ}), None,
                         study=str(claims["study"]))

    def revoke(self, share_id: str, owner: str | None) -> bool:
        """Revoke a live share; `owner` None (an admin) may revoke any. False if none."""
        condition = (SHARES.c.id == share_id) & SHARES.c.revoked_at.is_(None)
        if owner is not None:
            condition &= SHARES.c.created_by == owner
        with self.engine.begin() as connection:
            done = connection.execute(update(SHARES).where(condition).values(
                revoked_at=int(time.time()))).rowcount
        self._cache.discard(share_id)
        return bool(done)
