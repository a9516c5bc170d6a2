"""Access control tables: API keys (hashes only), share links, and the secret that signs share
links. In the database, so every worker and host shares them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from dicomweb.store.tables import UID, utcnow


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    name: str = Field(primary_key=True, max_length=200)
    #: SHA-256 of the key (hex). Keys are 256 random bits, so a fast hash is enough: there is
    #: no password to guess from it.
    key_hash: str = Field(unique=True, index=True, max_length=64)
    #: Space-separated scopes.
    scopes: str = ""
    #: Space-separated study labels.
    labels: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    #: Unix time after which the key is refused; None: never.
    expires_at: int | None = None


class Share(SQLModel, table=True):
    """A share link: read access to one study until it expires or is revoked."""

    __tablename__ = "shares"

    id: str = Field(primary_key=True, max_length=64)
    study_instance_uid: str = Field(index=True, max_length=UID)
    #: Who made it: "<kind>:<subject>" of the principal (only it, or an admin, may revoke it).
    created_by: str = Field(max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    #: Unix times.
    expires_at: int
    revoked_at: int | None = None


class AccessSecret(SQLModel, table=True):
    """Server secrets shared by all workers (the share-link signing key)."""

    __tablename__ = "access_secrets"

    name: str = Field(primary_key=True, max_length=64)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
