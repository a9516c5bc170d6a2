"""End to end: OHIF with login. `dicomweb serve --viewer --oidc-issuer … --viewer-oidc-client-id
ohif --study-access labels` and a real OpenID provider (npm oidc-provider) on 127.0.0.1, driven
in headless Chromium by tests/e2e/ohif-login.spec.mjs: two users with different
`dicomweb_labels` each sign in through the login form, see only their study, open it and see
its image, and get nothing of the other's study by its URL; a share link opens one study
without signing in. Needs what tests/test_viewer_e2e.py needs, plus `npm ci` in tests/e2e."""

from __future__ import annotations

import json
import os
import subprocess
import time

import factory
import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import with_meta
from oidc import DEFAULT_CLIENTS, Client, OidcProvider, free_port, start_provider
from test_viewer_e2e import ARTIFACTS, CHROMIUM, E2E, e2e_ready, viewer_args  # noqa: F401

from conformance import generate as gen

#: The two users of the provider's login form (tests/oidc.py): alice holds label A, bob B.
PATIENTS = {
    "alice": gen.Patient("Alpha^Anna", "E2E-LOGIN-A", "19700101", "F"),
    "bob": gen.Patient("Bravo^Bert", "E2E-LOGIN-B", "19800202", "M"),
}
WRITERS = {"alice": "writer-a", "bob": "writer-b"}  # client credentials with labels A, B


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def store_ct(server: Server, token: str, patient: gen.Patient, seed: int) -> str:
    """A small CT study of `patient`, stored with `token` (so it gets the token's labels)."""
    rt = gen.RtStudy(seed=seed, ct_slices=6, patient=patient)
    datasets = [with_meta(ds) for ds in gen.ct_series_datasets(rt)]
    body, content_type = factory.multipart([factory.to_bytes(ds) for ds in datasets])
    response = requests.post(f"{server.url}/studies", data=body, timeout=120,
                             headers={"Content-Type": content_type, **bearer(token)})
    assert response.status_code == 200, response.text
    return str(rt.study.uid)


@pytest.fixture(scope="module")
def login_setup(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    folder = tmp_path_factory.mktemp("viewer-login")
    port = free_port()
    provider: OidcProvider = start_provider(folder / "idp", clients=[
        *DEFAULT_CLIENTS, Client("ohif", redirect_uris=(f"http://127.0.0.1:{port}/callback",))])
    server = None
    try:
        server = start_server(folder / "data", None, port=port, extra=viewer_args(
            "--oidc-issuer", provider.issuer, "--oidc-audience", provider.audience,
            "--viewer-oidc-client-id", "ohif", "--study-access", "labels"))
        studies = {user: store_ct(server, provider.token(WRITERS[user]), patient, seed)
                   for seed, (user, patient) in enumerate(PATIENTS.items(), start=4100)}
        yield server, provider, studies
    finally:
        if server is not None:
            stop_server(server)
        provider.stop()


def run_login_browser(name: str, config: dict, timeout: float = 300) -> dict:
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OHIF_E2E": json.dumps(
        {**config, "chromium": CHROMIUM, "artifacts": str(artifacts)})}
    started = time.monotonic()
    done = subprocess.run(["node", "ohif-login.spec.mjs"], cwd=E2E, env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    assert done.returncode == 0, (
        f"browser test {name!r} failed after {time.monotonic() - started:.0f} s (screenshots "
        f"in {artifacts}):\n{done.stdout[-8000:]}\n{done.stderr[-4000:]}")
    return json.loads((artifacts / "report.json").read_text())


def test_ohif_login_labels_and_share_link(login_setup) -> None:
    server, provider, studies = login_setup
    users = []
    for user, other in (("alice", "bob"), ("bob", "alice")):
        users.append({
            "login": user,
            "studies": [{"uid": studies[user], "patientName": PATIENTS[user].name}],
            "hidden": {"uid": studies[other], "patientName": PATIENTS[other].name},
        })
    shared = requests.post(f"{server.url}/studies/{studies['alice']}/share", timeout=30,
                           headers=bearer(provider.token("writer-a")))
    assert shared.status_code == 201, shared.text
    viewer_url = shared.json()["viewer_url"]
    assert viewer_url.startswith(server.origin + "/viewer?")
    report = run_login_browser("login", {
        "url": server.origin + "/", "issuer": provider.issuer, "users": users,
        "share": {"url": viewer_url,
                  "study": {"uid": studies["alice"], "patientName": PATIENTS["alice"].name}},
    })
    assert report["passed"], report
    # The browser's DICOMweb requests are in the audit trail under each user's `sub`.
    trail = requests.get(f"{server.url}/audit", params={"limit": 1000}, timeout=30,
                         headers=bearer(provider.token("admin"))).json()
    who = {(r["user_kind"], r["user"]) for r in trail}
    assert {("oidc", "alice"), ("oidc", "bob")} <= who
    assert any(r["user_kind"] == "share" and r["action"] == "read" for r in trail)
    # Bob's attempts at Alice's study are recorded, and none of them was answered with data.
    attempts = [r for r in trail if r["user"] == "bob" and any(
        s["study_instance_uid"] == studies["alice"] for s in r["studies"])]
    assert attempts and all(r["status"] in (204, 404) for r in attempts)


def test_app_config_of_the_login_viewer(login_setup) -> None:
    server, provider, _ = login_setup
    config = requests.get(f"{server.origin}/app-config.js", timeout=30).text
    assert f'"authority": "{provider.issuer}"' in config
    assert '"client_id": "ohif"' in config
    assert f'"redirect_uri": "{server.origin}/callback"' in config
    assert '"scope": "openid profile dicomweb:read dicomweb:write"' in config
