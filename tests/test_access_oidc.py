"""OpenID Connect bearer tokens against a real provider (npm's oidc-provider on 127.0.0.1),
on SQLite and PostgreSQL: real client_credentials and authorization-code tokens pass; forged,
expired, not-yet-valid, wrong-audience, wrong-issuer, `alg: none` and HMAC-confusion tokens
fail with 401 invalid_token; the provider's key rotation is followed; forged key ids do not
make the server hammer the provider."""

from __future__ import annotations

import time
from collections.abc import Iterator

import factory
import jwt
import pytest
import requests
from access_setup import NO_CACHE, oidc_args
from conftest import Server, start_server, stop_server
from oidc import (
    DEFAULT_CLIENTS,
    Client,
    OidcProvider,
    SigningKey,
    hmac_with_public_key,
    start_provider,
    unsigned_token,
)

from dicomweb.access import READ, WRITE
from dicomweb.access.oidc import CLOCK_SKEW_SECONDS, REFETCH_SECONDS, OidcVerifier

OHIF = Client("ohif", redirect_uris=("http://127.0.0.1:9/callback",))


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[OidcProvider]:
    """This module's own provider: its keys rotate here."""
    started = start_provider(tmp_path_factory.mktemp("idp"), clients=[*DEFAULT_CLIENTS, OHIF])
    yield started
    started.stop()


@pytest.fixture(scope="module")
def oidc_server(own_database, provider, tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("oidc"), own_database,
                          extra=oidc_args(provider), env=NO_CACHE)
    yield server
    stop_server(server)


def studies(server: Server, token: str) -> requests.Response:
    return requests.get(f"{server.url}/studies", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def refused(server: Server, token: str, reason: str) -> None:
    response = studies(server, token)
    assert response.status_code == 401, (reason, response.text)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, challenge
    assert reason in response.json()["error"]["message"], response.text
    assert token not in response.text and token not in challenge


def test_real_tokens_are_accepted(oidc_server, provider) -> None:
    assert studies(oidc_server, provider.token("reader-a")).status_code in (200, 204)
    user = provider.login("alice")  # authorization code + PKCE through the login form
    assert studies(oidc_server, user["access_token"]).status_code in (200, 204)
    # The ID token is not an access token for this server (its audience is the client).
    refused(oidc_server, user["id_token"], "aud")
    assert studies(oidc_server, provider.mint()).status_code in (200, 204)


def test_scopes_and_labels_come_from_the_token(oidc_server, provider) -> None:
    writer = {"Authorization": f"Bearer {provider.token('writer-a')}"}
    study = factory.new_uid()
    body, content_type = factory.multipart([factory.to_bytes(factory.image(study=study))])
    stored = requests.post(f"{oidc_server.url}/studies", data=body, timeout=60,
                           headers={**writer, "Content-Type": content_type})
    assert stored.status_code == 200, stored.text
    admin = {"Authorization": f"Bearer {provider.token('admin')}"}
    labels = requests.get(f"{oidc_server.url}/studies/{study}/labels", headers=admin, timeout=30)
    assert labels.json()["labels"] == ["A"]
    # `--study-access all` (the default): label B's reader sees label A's study.
    reader_b = {"Authorization": f"Bearer {provider.token('reader-b')}"}
    metadata = requests.get(f"{oidc_server.url}/studies/{study}/metadata", headers=reader_b,
                            timeout=30)
    assert metadata.status_code == 200
    # A token is also accepted as the `token` query parameter (GET), never logged.
    token = provider.token("reader-a")
    before = len(oidc_server.log())
    by_query = requests.get(f"{oidc_server.url}/studies/{study}/metadata",
                            params={"token": token}, timeout=30)
    assert by_query.status_code == 200
    assert token not in oidc_server.log_once_it_holds("/metadata\"", before)


def test_claim_checks(oidc_server, provider) -> None:
    now = int(time.time())
    late = CLOCK_SKEW_SECONDS + 60
    cases = {
        "the token has expired": provider.claims(exp=now - late),
        "the token is not valid yet": provider.claims(nbf=now + late),
        "the token is not meant for this server (aud)": provider.claims(aud="another-api"),
        "the token comes from another issuer (iss)": provider.claims(
            iss="http://127.0.0.1:1/evil"),
        "the token has no exp claim": provider.claims(exp=None),
        "the token has no aud claim": provider.claims(aud=None),
        "the token has no sub claim": provider.claims(sub=None),
    }
    for reason, claims in cases.items():
        refused(oidc_server, provider.mint(claims), reason)
    # Within the clock skew: still valid.
    near = provider.claims(exp=now - CLOCK_SKEW_SECONDS // 2, nbf=now + CLOCK_SKEW_SECONDS // 2)
    assert studies(oidc_server, provider.mint(near)).status_code in (200, 204)
    # A list audience that names us is fine.
    listed = provider.claims(aud=["another-api", provider.audience])
    assert studies(oidc_server, provider.mint(listed)).status_code in (200, 204)


def test_forged_and_confused_tokens(oidc_server, provider) -> None:
    claims = provider.claims()
    real = provider.keys[0]
    # Our own key, claiming the provider's key id.
    impostor = SigningKey(real.kid, real.alg, SigningKey.new().private)
    refused(oidc_server, impostor.sign(claims), "signature does not verify")
    # A key id the provider never published.
    refused(oidc_server, SigningKey.new().sign(claims), "signing key is not one of the issuer")
    # alg none, with and without the real key id.
    refused(oidc_server, unsigned_token(claims, real.kid), "'none'")
    refused(oidc_server, unsigned_token(claims), "'none'")
    # HMAC with the provider's public key as the secret.
    refused(oidc_server, hmac_with_public_key(provider, claims), "'HS256'")
    # The key declares RS256: the same key may not sign PS256.
    refused(oidc_server, jwt.encode(claims, real.private, algorithm="PS256",
                                    headers={"kid": real.kid}), "does not allow PS256")
    # Tampered payload of a real token.
    header, payload, signature = provider.token("reader-a").split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b"dicomweb:read", b"dicomweb:admin"))
    refused(oidc_server, f"{header}.{forged_payload.decode()}.{signature}", "signature")
    refused(oidc_server, "abc", "not a JWT")


def test_forged_key_ids_are_rate_limited(oidc_server, provider) -> None:
    time.sleep(REFETCH_SECONDS)  # let any earlier refetch window pass
    before, started = provider.jwks_fetches(), time.monotonic()
    for _ in range(20):
        assert studies(oidc_server, SigningKey.new().sign(provider.claims())).status_code == 401
    windows = 1 + int((time.monotonic() - started) / REFETCH_SECONDS)
    assert provider.jwks_fetches() - before <= windows < 20


def test_key_rotation_at_the_provider(oidc_server, provider) -> None:
    old_key = provider.keys[0]
    assert studies(oidc_server, provider.token("reader-a")).status_code in (200, 204)
    new_key = provider.rotate(keep_old=False)  # the old key is withdrawn
    token = provider.token("reader-a")
    assert jwt.get_unverified_header(token)["kid"] == new_key.kid
    deadline = time.time() + REFETCH_SECONDS + 5
    while studies(oidc_server, token).status_code == 401:  # the unknown kid → JWKS again
        assert time.time() < deadline, "the server did not follow the key rotation"
        time.sleep(0.5)
    # After the refetch the withdrawn key is unknown.
    refused(oidc_server, provider.mint(provider.claims(), key=old_key),
            "signing key is not one of the issuer")


def test_es256_keys(tmp_path) -> None:
    """Elliptic-curve keys of a real provider verify (in-process verifier, real HTTP)."""
    es = start_provider(tmp_path / "es", alg="ES256")
    try:
        verifier = OidcVerifier(es.issuer, es.audience)
        assert verifier.refresh(force=True)
        token = es.token("writer-a")
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        principal = verifier.verify(token)
        assert principal.scopes == {READ, WRITE} and principal.labels == {"A"}
        assert principal.subject == "writer-a" and principal.client_id == "writer-a"
    finally:
        es.stop()


def test_scope_and_label_claims() -> None:
    verifier = OidcVerifier("http://issuer", "aud", roles_claim="realm_access.roles",
                            labels_claim="https://example.org/labels")
    principal = verifier.principal({
        "sub": "u", "azp": "ohif", "scope": "openid dicomweb:read profile",
        "realm_access": {"roles": ["dicomweb:write", "offline_access"]},
        "https://example.org/labels": ["cardio", "onco"],
    })
    assert principal.scopes == {READ, WRITE}
    assert principal.labels == {"cardio", "onco"} and principal.client_id == "ohif"
    assert verifier.principal({"sub": "u"}).scopes == frozenset()
    assert verifier.principal({"sub": "u"}).labels == frozenset()


def test_no_token_ever_reaches_the_log(oidc_server, provider) -> None:
    token = provider.token("reader-a")
    before = len(oidc_server.log())
    requests.get(f"{oidc_server.url}/studies", params={"token": token}, timeout=30)
    requests.get(f"{oidc_server.url}/studies", headers={"Authorization": f"Bearer {token}x"},
                 timeout=30)
    log = oidc_server.log_once_it_holds('"path":"/dicomweb/studies"', before, times=2)
    assert token not in log and token.split(".")[2] not in log
