"""OpenID Connect access tokens (JWT), verified with PyJWT against the issuer's published keys.

Discovery (`ISSUER/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 section 4)
names the JWKS; its keys are cached and fetched again on an unknown `kid` (at most once per
`REFETCH_SECONDS`, so forged key ids cannot make us hammer the provider) and hourly. A token is
checked against the one key its `kid` names, with only the asymmetric algorithms that key
allows: never `none`, never HMAC (so a public key can never serve as an HMAC secret).
Verification needs no network: verified tokens are remembered until they expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from dicomweb.access import ALL_SCOPES, Principal
from dicomweb.access.cache import ExpiringCache
from dicomweb.access.errors import InvalidCredentials

log = logging.getLogger("dicomweb.access")

#: Clock skew allowed on exp, nbf and iat.
CLOCK_SKEW_SECONDS = 30
REFETCH_SECONDS = 5.0
MAX_KEYS_AGE_SECONDS = 3600.0
FETCH_TIMEOUT_SECONDS = 5.0
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
#: Every algorithm a key may be used with: asymmetric signatures only.
ASYMMETRIC = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {"EdDSA"}

Fetch = Callable[[str], Any]


def fetch_json(url: str) -> Any:
    response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS,
                            headers={"Accept": "application/json"})
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class SigningKey:
    key: Any  # a cryptography public key
    algorithms: frozenset[str]


def allowed_algorithms(jwk: dict[str, Any]) -> frozenset[str]:
    """What a JWK may verify: its `alg` if it declares one, else what its type can do."""
    kty = jwk.get("kty")
    if kty == "RSA":
        possible = RSA_ALGORITHMS
    elif kty == "EC":
        possible = frozenset({EC_ALGORITHMS[jwk["crv"]]}) if jwk.get("crv") in EC_ALGORITHMS \
            else frozenset()
    elif kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448"):
        possible = frozenset({"EdDSA"})
    else:
        return frozenset()  # symmetric ("oct") and unknown keys never verify a token
    declared = jwk.get("alg")
    if declared is not None:
        return frozenset({declared}) & possible
    return possible


def signing_keys(jwks: Any) -> dict[str | None, SigningKey]:
    """The JWKS's verification keys by `kid` (keys for encryption are left out)."""
    keys: dict[str | None, SigningKey] = {}
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        algorithms = allowed_algorithms(jwk)
        if not algorithms:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=sorted(algorithms)[0]).key
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            log.warning("JWKS key %s skipped: %s", jwk.get("kid"), exc)
            continue
        keys[jwk.get("kid")] = SigningKey(key, algorithms)
    return keys


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def words(value: Any) -> list[str]:
    """A list claim (or a space-separated string) as its strings."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, *, roles_claim: str = "roles",
                 labels_claim: str = "dicomweb_labels", fetch: Fetch = fetch_json) -> None:
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim
        self.labels_claim = labels_claim
        self.fetch = fetch
        self._jwks_uri: str | None = None
        self._expected_issuer = issuer
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = 0.0
        self._attempted_at = -REFETCH_SECONDS
        self._lock = threading.Lock()
        self._verified: ExpiringCache[Principal] = ExpiringCache(3600, max_entries=8192)

    # --- keys ---------------------------------------------------------------------------
    def discover(self) -> str:
        found = self.fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        issuer, jwks_uri = found.get("issuer"), found.get("jwks_uri")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer.rstrip("/"):
            raise ValueError(f"the discovery document names issuer {issuer!r}, "
                             f"not {self.issuer!r}")
        if not isinstance(jwks_uri, str):
            raise ValueError("the discovery document has no jwks_uri")
        self._expected_issuer = issuer  # tokens carry it exactly as the provider writes it
        return jwks_uri

    def refresh(self, *, force: bool = False) -> bool:
        """Fetch discovery (first time) and the JWKS, unless one was tried in the last
        REFETCH_SECONDS (and `force` is False). True if the keys were replaced."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._attempted_at < REFETCH_SECONDS:
                return False
            self._attempted_at = now
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = self.discover()
                keys = signing_keys(self.fetch(self._jwks_uri))
            except (requests.RequestException, ValueError, AttributeError) as exc:
                log.error("OpenID provider %s: cannot fetch its keys: %s", self.issuer, exc)
                return False
            self._keys, self._fetched_at = keys, now
            log.info("OpenID provider %s: %d signing key(s)", self.issuer, len(keys))
            return True

    @property
    def keys_stale(self) -> bool:
        return time.monotonic() - self._fetched_at > MAX_KEYS_AGE_SECONDS

    def needs_keys(self, token: str) -> bool:
        """Whether verifying `token` would first need a fetch (unknown kid, stale keys)."""
        if self._verified.get(token) is not None:
            return False
        if self.keys_stale:
            return True
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return False
        return self._key_for(kid) is None

    def _key_for(self, kid: str | None) -> SigningKey | None:
        keys = self._keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    # --- tokens -------------------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        """The token's principal; InvalidCredentials saying why not. No network here: call
        `refresh()` first when `needs_keys(token)`."""
        known = self._verified.get(token)
        if known is not None:
            return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidCredentials("the token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC:
            raise InvalidCredentials(f"tokens signed with {algorithm!r} are not accepted")
        signing = self._key_for(header.get("kid"))
        if signing is None:
            raise InvalidCredentials("the token's signing key is not one of the issuer's")
        if algorithm not in signing.algorithms:
            raise InvalidCredentials(f"the signing key does not allow {algorithm}")
        try:
            claims = jwt.decode(
                token, signing.key, algorithms=[algorithm], audience=self.audience,
                issuer=self._expected_issuer, leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidCredentials("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials("the token is not meant for this server (aud)") from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials("the token comes from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidCredentials(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidCredentials("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidCredentials("the token is not valid") from None
        principal = self.principal(claims)
        self._verified.put(token, principal, float(claims["exp"]) - time.time())
        return principal

    def principal(self, claims: dict[str, Any]) -> Principal:
        granted = set(words(claims.get("scope"))) | set(words(claim(claims, self.roles_claim)))
        return Principal(
            "oidc",
            str(claims["sub"]),
            frozenset(granted & ALL_SCOPES),
            frozenset(words(claim(claims, self.labels_claim))),
            client_id=claims.get("azp") or claims.get("client_id"),
        )
