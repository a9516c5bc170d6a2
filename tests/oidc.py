"""A real OpenID provider on 127.0.0.1 for the tests: npm's `oidc-provider`, run by
tests/e2e/oidc-provider.mjs (installed by `npm ci --prefix tests/e2e`), stopped by PID.

`start_provider(folder)` starts one; the `oidc_provider` fixture (conftest) is one per session
with the default clients and users below. The provider's signing keys are made here, so tests
can also sign tokens with them directly (`mint`): a token the provider could have issued, with
claims a test chooses (expired, wrong audience…). `rotate()` restarts the provider on the same
port with a new signing key, as an identity provider's key rotation looks from outside.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

E2E = Path(__file__).resolve().parent / "e2e"
SCRIPT = E2E / "oidc-provider.mjs"
AUDIENCE = "urn:dicomweb:tests"
IN_CI = bool(os.environ.get("CI"))


@dataclass(frozen=True)
class Client:
    """A registered client. Confidential ones (with a secret) use client_credentials."""

    client_id: str
    scope: str = ""
    labels: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None
    secret: str | None = None
    redirect_uris: tuple[str, ...] = ()

    def metadata(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"client_id": self.client_id}
        if self.secret is not None:
            entry |= {"client_secret": self.secret, "grant_types": ["client_credentials"],
                      "response_types": [], "redirect_uris": []}
            if self.scope:
                entry["scope"] = self.scope
        else:  # a browser application (OHIF): authorization code + PKCE, no secret
            entry |= {"token_endpoint_auth_method": "none",
                      "grant_types": ["authorization_code", "refresh_token"],
                      "response_types": ["code"], "redirect_uris": list(self.redirect_uris),
                      "post_logout_redirect_uris": list(self.redirect_uris),
                      "application_type": "web"}
        if self.labels is not None:
            entry["labels"] = list(self.labels)
        if self.roles is not None:
            entry["roles"] = list(self.roles)
        return entry


@dataclass(frozen=True)
class User:
    """An account of the login form (any password): the scopes it may be granted, its claims."""

    scope: str
    labels: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope}
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.roles is not None:
            out["roles"] = list(self.roles)
        return out


def confidential(client_id: str, scope: str, labels: Iterable[str] | None = None,
                 roles: Iterable[str] | None = None) -> Client:
    return Client(client_id, scope, tuple(labels) if labels is not None else None,
                  tuple(roles) if roles is not None else None, secret=f"{client_id}-secret")


#: Machine clients of the default provider (client_credentials).
DEFAULT_CLIENTS = (
    confidential("reader-a", "dicomweb:read", ["A"]),
    confidential("reader-b", "dicomweb:read", ["B"]),
    confidential("reader-ab", "dicomweb:read", ["A", "B"]),
    confidential("reader-nolabels", "dicomweb:read"),
    confidential("writer-a", "dicomweb:read dicomweb:write", ["A"]),
    confidential("writer-b", "dicomweb:read dicomweb:write", ["B"]),
    confidential("deleter-a", "dicomweb:read dicomweb:delete", ["A"]),
    confidential("admin", "dicomweb:admin"),
    confidential("nothing", ""),
    # Scopes from the list claim `roles` (Keycloak / Entra ID style) instead of `scope`.
    confidential("roles-reader-a", "", ["A"], roles=["dicomweb:read"]),
)
#: Users of the login form (authorization code + PKCE, e.g. OHIF).
DEFAULT_USERS = {
    "alice": User("dicomweb:read dicomweb:write", ("A",)),
    "bob": User("dicomweb:read dicomweb:write", ("B",)),
    "admin": User("dicomweb:read dicomweb:write dicomweb:delete dicomweb:admin"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def new(cls, alg: str = "RS256") -> SigningKey:
        if alg.startswith("ES"):
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg]
            return cls(uuid.uuid4().hex[:16], alg, ec.generate_private_key(curve))
        return cls(uuid.uuid4().hex[:16], alg, rsa.generate_private_key(65537, 2048))

    def jwk(self, *, private: bool) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        key = self.private if private else self.private.public_key()
        entry = algorithm.to_jwk(key, as_dict=True)
        return {**entry, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg,
                          headers={"kid": self.kid, **(headers or {})})


@dataclass
class OidcProvider:
    issuer: str
    audience: str
    port: int
    folder: Path
    clients: dict[str, Client]
    users: dict[str, User]
    keys: list[SigningKey]
    access_token_ttl: int = 600
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.folder / "oidc-provider.log"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "audience": self.audience,
            "access_token_ttl": self.access_token_ttl,
            "signing_alg": self.keys[0].alg,
            "jwks": {"keys": [k.jwk(private=True) for k in self.keys]},
            "clients": [c.metadata() for c in self.clients.values()],
            "users": {name: user.entry() for name, user in self.users.items()},
        }
        config_path = self.folder / "oidc-provider.json"
        config_path.write_text(json.dumps(config))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(["node", str(SCRIPT), str(config_path)], cwd=E2E,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited:\n{self.log()}")
            try:
                found = requests.get(self.discovery_url, timeout=1)
                if found.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"oidc-provider did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def rotate(self, *, keep_old: bool = True, alg: str | None = None) -> SigningKey:
        """A new signing key (first in the JWKS); the old ones stay published unless
        `keep_old` is False. The provider restarts on the same port and issuer."""
        key = SigningKey.new(alg or self.keys[0].alg)
        self.keys = [key, *self.keys] if keep_old else [key]
        self.stop()
        self.start()
        return key

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def jwks_fetches(self) -> int:
        """How many times anyone fetched the JWKS since the provider was first started."""
        return self.log().count('"GET /jwks"')

    # --- endpoints ------------------------------------------------------------------------
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def discovery(self) -> dict[str, Any]:
        return requests.get(self.discovery_url, timeout=10).json()

    def token(self, client_id: str, scope: str | None = None) -> str:
        """A real access token (JWT) for a confidential client: client_credentials."""
        client = self.clients[client_id]
        data = {"grant_type": "client_credentials", "resource": self.audience}
        wanted = client.scope if scope is None else scope
        if wanted:
            data["scope"] = wanted
        response = requests.post(
            self.discovery()["token_endpoint"], data=data, timeout=10,
            auth=(client.client_id, client.secret or ""))
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def login(self, user: str, client_id: str = "ohif", *,
              scope: str = "openid profile dicomweb:read dicomweb:write") -> dict[str, Any]:
        """What a browser does for `user`: authorization code + PKCE through the login form;
        returns the token response (access_token, id_token, …)."""
        import hashlib
        import html
        import re
        import secrets
        from urllib.parse import parse_qs, urljoin, urlsplit

        client = self.clients[client_id]
        redirect_uri = client.redirect_uris[0]
        verifier = secrets.token_urlsafe(48)
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        endpoints = self.discovery()
        browser = requests.Session()
        params = {"client_id": client_id, "response_type": "code", "scope": scope,
                  "redirect_uri": redirect_uri, "code_challenge": challenge,
                  "code_challenge_method": "S256", "state": secrets.token_hex(8)}
        page = browser.get(endpoints["authorization_endpoint"], params=params, timeout=10)
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        assert action, page.text
        answer = browser.post(urljoin(page.url, html.unescape(action.group(1))),
                              data={"prompt": "login", "login": user, "password": "any"},
                              allow_redirects=False, timeout=10)
        while answer.is_redirect and not answer.headers["location"].startswith(redirect_uri):
            answer = browser.get(urljoin(answer.url, answer.headers["location"]),
                                 allow_redirects=False, timeout=10)
        assert answer.is_redirect, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert "code" in query, query
        tokens = requests.post(endpoints["token_endpoint"], timeout=10, data={
            "grant_type": "authorization_code", "code": query["code"][0],
            "redirect_uri": redirect_uri, "client_id": client_id, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return tokens.json()

    # --- tokens signed here with the provider's own key ---------------------------------
    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Claims of a valid access token for this audience, overridden by `overrides`
        (a value of None removes the claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": "minted", "client_id": "minted",
            "iat": now, "exp": now + 300, "scope": "dicomweb:read", "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, claims: dict[str, Any] | None = None, *, key: SigningKey | None = None,
             headers: dict[str, Any] | None = None) -> str:
        """A token signed with the provider's current signing key (or `key`)."""
        return (key or self.keys[0]).sign(claims or self.claims(), headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], kid: str | None = None) -> str:
    """`alg: none`: a token with no signature at all."""
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hmac_with_public_key(provider: OidcProvider, claims: dict[str, Any]) -> str:
    """HS256 signed with the provider's public key as the HMAC secret (the classic
    algorithm-confusion attack): the key bytes are the public JWK's JSON and its PEM."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    key = provider.keys[0]
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def missing_node() -> str | None:
    if not shutil.which("node"):
        return "node (Node.js 20+)"
    if not (E2E / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider (run `npm ci --prefix tests/e2e`)"
    return None


def start_provider(folder: Path, *, clients: Iterable[Client] = DEFAULT_CLIENTS,
                   users: dict[str, User] | None = None, alg: str = "RS256",
                   access_token_ttl: int = 600) -> OidcProvider:
    """Start a provider on a free port of 127.0.0.1 (skips, or fails under CI, without node
    and `npm ci --prefix tests/e2e`). Stop it with `.stop()`."""
    if missing := missing_node():
        if IN_CI:
            pytest.fail(f"the OpenID provider needs {missing} (CI is set: it must run)")
        pytest.skip(f"the OpenID provider needs {missing}")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    provider = OidcProvider(
        issuer=f"http://127.0.0.1:{port}", audience=AUDIENCE, port=port, folder=folder,
        clients={c.client_id: c for c in clients},
        users=dict(DEFAULT_USERS if users is None else users),
        keys=[SigningKey.new(alg)], access_token_ttl=access_token_ttl)
    provider.start()
    return provider
