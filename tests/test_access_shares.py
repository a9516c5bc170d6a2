"""Share links on a two-worker server (the signing secret lives in the database, so every
worker checks every link), SQLite and PostgreSQL: read access to one study as a bearer token or
a `token=` parameter, nothing else; expiry, the cap, revocation by the creator or an admin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import factory
import jwt
import pytest
import requests
from access_setup import Caller, start_auth_server, viewer_args
from conftest import Server, stop_server

MAX_SECONDS = 3600


@pytest.fixture(scope="module")
def share_server(own_database, oidc_provider, tmp_path_factory) -> Iterator[Server]:
    server = start_auth_server(tmp_path_factory.mktemp("shares"), own_database, oidc_provider,
                               "--study-access", "labels", "--workers", "2",
                               "--share-max-seconds", str(MAX_SECONDS), *viewer_args())
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def studies(share_server, oidc_provider) -> dict[str, str]:
    """Two studies of label A (one shared below), one of label B."""
    out = {}
    for name, writer in (("a1", "writer-a"), ("a2", "writer-a"), ("b", "writer-b")):
        out[name] = factory.new_uid()
        ds = factory.image(study=out[name])
        assert Caller(oidc_provider, writer).stow(share_server, [ds]).status_code == 200
    return out


def share(server: Server, caller: Caller, study: str, **params: str) -> requests.Response:
    return caller.request("POST", f"{server.url}/studies/{study}/share", params=params)


def test_a_share_reads_its_study_only(share_server, studies, oidc_provider) -> None:
    reader = Caller(oidc_provider, "reader-a")
    made = share(share_server, reader, studies["a1"], expires="600")
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) >= {"token", "expires", "id"}
    assert 590 <= body["expires_in"] <= 600 and body["expires"].endswith("Z")
    token, url = body["token"], share_server.url
    metadata = f"{url}/studies/{studies['a1']}/metadata"
    for _ in range(6):  # both workers know the signing secret
        assert requests.get(metadata, headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code == 200
        assert requests.get(metadata, params={"token": token}, timeout=30).status_code == 200
    # QIDO as OHIF does it with a share link: only the shared study.
    found = requests.get(f"{url}/studies", params={"token": token}, timeout=30).json()
    assert [row["0020000D"]["Value"][0] for row in found] == [studies["a1"]]
    # The same label's other study, and another label's: like unknown UIDs.
    for other in (studies["a2"], studies["b"]):
        assert requests.get(f"{url}/studies/{other}/metadata", params={"token": token},
                            timeout=30).status_code == 404
    bearer = {"Authorization": f"Bearer {token}"}
    before = len(share_server.log())
    # Read only: no store, no delete, no new share, no labels.
    body, content_type = factory.multipart([factory.to_bytes(factory.image(study=studies["a1"]))])
    assert requests.post(f"{url}/studies", data=body, timeout=30,
                         headers={**bearer, "Content-Type": content_type}).status_code == 403
    assert requests.delete(f"{url}/studies/{studies['a1']}", headers=bearer,
                           timeout=30).status_code == 403
    assert requests.post(f"{url}/studies/{studies['a1']}/share", headers=bearer,
                         timeout=30).status_code == 403
    assert requests.get(f"{url}/studies/{studies['a1']}/labels", headers=bearer,
                        timeout=30).status_code == 403
    assert token not in share_server.log_once_it_holds("/labels\"", before)


def test_the_viewer_link(share_server, studies, oidc_provider) -> None:
    body = share(share_server, Caller(oidc_provider, "reader-a"), studies["a1"]).json()
    if not viewer_args():
        assert "viewer_url" not in body
        return
    link = urlsplit(body["viewer_url"])
    assert link.path == "/viewer" and link.netloc == urlsplit(share_server.origin).netloc
    query = parse_qs(link.query)
    assert query == {"StudyInstanceUIDs": [studies["a1"]], "token": [body["token"]]}


def test_who_may_share(share_server, studies, oidc_provider) -> None:
    # reader-b cannot see A's study: 404 like an unknown one.
    assert share(share_server, Caller(oidc_provider, "reader-b"), studies["a1"]).status_code \
        == 404
    assert share(share_server, Caller(oidc_provider, "reader-b"), factory.new_uid()).status_code \
        == 404
    # A caller without dicomweb:read cannot share.
    assert share(share_server, Caller(oidc_provider, "nothing"), studies["a1"]).status_code \
        == 403
    # An admin shares any study.
    assert share(share_server, Caller(oidc_provider, "admin"), studies["b"]).status_code == 201


def test_lifetime_default_cap_and_bad_values(share_server, studies, oidc_provider) -> None:
    reader = Caller(oidc_provider, "reader-a")
    # Default 7 days, capped by --share-max-seconds.
    assert share(share_server, reader, studies["a1"]).json()["expires_in"] <= MAX_SECONDS
    capped = share(share_server, reader, studies["a1"], expires=str(10 * MAX_SECONDS)).json()
    assert MAX_SECONDS - 10 <= capped["expires_in"] <= MAX_SECONDS
    claims = jwt.decode(capped["token"][4:], options={"verify_signature": False})
    assert claims["exp"] - time.time() <= MAX_SECONDS
    for bad in ("0", "-5", "soon"):
        response = share(share_server, reader, studies["a1"], expires=bad)
        assert response.status_code == 400 and response.json()["error"]["parameter"] == "expires"


def test_expiry(share_server, studies, oidc_provider) -> None:
    token = share(share_server, Caller(oidc_provider, "reader-a"), studies["a1"],
                  expires="1").json()["token"]
    url = f"{share_server.url}/studies/{studies['a1']}/metadata"
    time.sleep(2.1)
    expired = requests.get(url, params={"token": token}, timeout=30)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


def test_revocation(share_server, studies, oidc_provider) -> None:
    reader, other = Caller(oidc_provider, "reader-a"), Caller(oidc_provider, "reader-ab")
    made = share(share_server, reader, studies["a1"]).json()
    url = f"{share_server.url}/studies/{studies['a1']}/metadata"
    assert requests.get(url, params={"token": made["token"]}, timeout=30).status_code == 200
    # Only its creator (or an admin) revokes it.
    revoke = f"{share_server.url}/shares/{made['id']}"
    assert other.request("DELETE", revoke).status_code == 404
    assert reader.request("DELETE", revoke).status_code == 204
    assert reader.request("DELETE", revoke).status_code == 404
    for _ in range(4):  # on both workers
        refused = requests.get(url, params={"token": made["token"]}, timeout=30)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    by_admin = share(share_server, reader, studies["a1"]).json()
    assert Caller(oidc_provider, "admin").request(
        "DELETE", f"{share_server.url}/shares/{by_admin['id']}").status_code == 204
    assert requests.get(url, params={"token": by_admin["token"]}, timeout=30).status_code == 401


def test_forged_shares(share_server, studies, oidc_provider) -> None:
    real = share(share_server, Caller(oidc_provider, "reader-a"), studies["a1"]).json()
    claims = jwt.decode(real["token"][4:], options={"verify_signature": False})
    url = f"{share_server.url}/studies/{studies['b']}/metadata"
    guess = "a guessed secret, 32 bytes or more"
    other_secret = "dws_" + jwt.encode({**claims, "study": studies["b"]}, guess,
                                       algorithm="HS256")
    header, _, signature = real["token"][4:].split(".")
    payload = jwt.utils.base64url_encode(jwt.utils.base64url_decode(
        real["token"][4:].split(".")[1]).replace(studies["a1"].encode(), studies["b"].encode()))
    swapped = f"dws_{header}.{payload.decode()}.{signature}"
    none = "dws_" + jwt.encode({**claims, "study": studies["b"]}, None, algorithm="none")
    for forged in (other_secret, swapped, none):
        response = requests.get(url, params={"token": forged}, timeout=30)
        assert response.status_code == 401, forged
