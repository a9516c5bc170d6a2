"""`serve --viewer`: app-config generation, static files, SPA fallback, route priority, fetch.

A tiny fake OHIF dist stands in for the real one (no network, no npm).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dicomweb import viewer
from dicomweb.access import ALL_SCOPES, Principal
from dicomweb.app import create_app
from dicomweb.cli import build_parser, settings_from
from dicomweb.config import Settings

FAKE_FILES = {
    "index.html": b"<!doctype html><script src=/app-config.js></script><div id=root></div>",
    "app-config.js": b"window.config = {shipped: true};",
    "app.bundle.0f6159c501addfe9.js": b"console.log('app')",
    "0ddf166f7a343eda.wasm": b"\0asm\1\0\0\0",
    "manifest.json": b"{}",
    "app.bundle.css": b"body{}",
    "assets/favicon.ico": b"\0\0\1\0",
    "customizations/x.jsonc": b"{}",
}
ISOLATED = {"cross-origin-opener-policy": "same-origin",
            "cross-origin-embedder-policy": "require-corp"}


def make_dist(folder: Path) -> Path:
    for name, content in FAKE_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def viewer_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    make_dist(cache / f"ohif-{viewer.OHIF_VERSION}")
    return cache


def client_for(tmp_path: Path, viewer_cache: Path, *, peer: str = "127.0.0.1",
               **settings: object) -> TestClient:
    """A client connecting from `peer` (loopback: a proxy trusted by default)."""
    options = {"data_dir": tmp_path / "data", "viewer": True, "viewer_dir": viewer_cache,
               **settings}
    app = create_app(Settings(**options).normalised())  # type: ignore[arg-type]
    return TestClient(app, client=(peer, 50000))


@pytest.fixture
def client(tmp_path: Path, viewer_cache: Path):
    with client_for(tmp_path, viewer_cache) as test_client:
        yield test_client


def config_of(response) -> dict:
    match = re.search(r"window\.config = (\{.*\});\s*$", response.text, re.S)
    assert match, response.text
    return json.loads(match.group(1))


def data_source(config: dict) -> dict:
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    return source["configuration"]


def test_app_config_points_at_this_server(client: TestClient) -> None:
    response = client.get("/app-config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    config = config_of(response)
    assert config["showStudyList"] is True
    source = data_source(config)
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot", "stowRoot"):
        assert source[root] == "http://testserver/dicomweb"
    assert source["imageRendering"] == "wadors"
    assert source["thumbnailRendering"] == "wadors"
    assert source["enableStudyLazyLoad"] is True
    assert source["supportsFuzzyMatching"] is True
    assert source["supportsWildcard"] is True
    assert source["bulkDataURI"] == {"enabled": True}
    assert source["omitQuotationForMultipartRequest"] is True
    assert source["dicomUploadEnabled"] is True


def test_app_config_follows_the_proxy(client: TestClient) -> None:
    response = client.get("/app-config.js", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"})
    assert data_source(config_of(response))["qidoRoot"] == "https://pacs.example.org/dicomweb"


def test_app_config_ignores_forwarded_headers_of_untrusted_peers(
    tmp_path: Path, viewer_cache: Path
) -> None:
    with client_for(tmp_path, viewer_cache, peer="203.0.113.9") as remote:
        response = remote.get("/app-config.js", headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.org"})
    assert data_source(config_of(response))["qidoRoot"] == "http://testserver/dicomweb"


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Host": 'a"b', "X-Forwarded-Proto": "javascript"},
    {"Forwarded": 'proto=gopher;host="x\\"y"'},
    {"X-Forwarded-Host": "good.example.org", "X-Forwarded-Prefix": '/p"</script>'},
])
def test_app_config_takes_only_well_formed_forwarded_values(
    client: TestClient, headers: dict[str, str]
) -> None:
    root = data_source(config_of(client.get("/app-config.js", headers=headers)))["qidoRoot"]
    assert root in ("http://testserver/dicomweb", "http://good.example.org/dicomweb")


def test_viewer_path_with_nul_is_400(client: TestClient) -> None:
    # A NUL in any URL is refused at the edge (guards.NoNulInUrl), before the viewer's files.
    response = client.get("/index.html%00.js")
    assert response.status_code == 400


def test_app_config_cross_origin_root(tmp_path: Path, viewer_cache: Path) -> None:
    other = "http://data.example.org:8042/dicomweb"
    with client_for(tmp_path, viewer_cache, viewer_dicomweb_root=other + "/") as test_client:
        source = data_source(config_of(test_client.get("/app-config.js")))
    assert source["qidoRoot"] == source["wadoRoot"] == source["wadoUriRoot"] == other


@pytest.mark.parametrize("path, media_type", [
    ("/app.bundle.0f6159c501addfe9.js", "text/javascript"),
    ("/0ddf166f7a343eda.wasm", "application/wasm"),
    ("/manifest.json", "application/json"),
    ("/customizations/x.jsonc", "application/json"),
    ("/app.bundle.css", "text/css"),
    ("/assets/favicon.ico", "image/x-icon"),
    ("/", "text/html"),
])
def test_static_files_and_media_types(client: TestClient, path: str, media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media_type
    for name, value in ISOLATED.items():
        assert response.headers[name] == value
    if path != "/":
        assert response.content == FAKE_FILES[path.lstrip("/")]


def test_hashed_bundles_are_cached_for_long(client: TestClient) -> None:
    assert "immutable" in client.get("/0ddf166f7a343eda.wasm").headers["cache-control"]
    assert client.get("/").headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", [
    "/viewer?StudyInstanceUIDs=1.2.840.113619.2.1",
    "/viewer/dicomweb?StudyInstanceUIDs=1.2.3",
    "/mpr",
    "/viewer/1.2.840.113619.2.55.3",  # a UID's last part is not a file suffix
    "/segmentation?StudyInstanceUIDs=1.2.3&hangingprotocolId=mpr",
])
def test_client_side_routes_get_index_html(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.content == FAKE_FILES["index.html"]
    assert response.headers["cross-origin-embedder-policy"] == "require-corp"


@pytest.mark.parametrize("path", ["/missing.js", "/assets/none.png", "/../../etc/passwd.txt"])
def test_missing_files_are_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_files_outside_the_dist_are_not_served(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("no")
    response = client.get("/%2e%2e/%2e%2e/secret.txt")
    assert response.status_code == 404


def test_dicomweb_and_health_keep_priority(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    studies = client.get("/dicomweb/studies", headers={"Accept": "application/dicom+json"})
    assert studies.status_code == 204
    missing = client.get("/dicomweb/studies/1.2.3/metadata",
                         headers={"Accept": "application/dicom+json"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert client.get("/dicomweb/no-such-route").status_code == 404
    assert b"<!doctype html>" not in client.get("/dicomweb/no-such-route").content
    assert client.post("/app-config.js").status_code == 405


def test_without_the_viewer_nothing_is_served_at_the_root(tmp_path: Path,
                                                          viewer_cache: Path) -> None:
    with client_for(tmp_path, viewer_cache, viewer=False) as test_client:
        assert test_client.get("/").status_code == 404
        assert test_client.get("/app-config.js").status_code == 404


def test_a_folder_with_a_build_is_served_as_is(tmp_path: Path) -> None:
    build = make_dist(tmp_path / "my-ohif")
    with client_for(tmp_path, build) as test_client:
        assert test_client.get("/manifest.json").status_code == 200


def test_missing_viewer_says_how_to_fetch_it(tmp_path: Path) -> None:
    with client_for(tmp_path, tmp_path / "empty") as test_client:
        response = test_client.get("/")
    assert response.status_code == 503
    assert "dicomweb viewer fetch" in response.text


def test_settings_from_environment_and_options(tmp_path: Path) -> None:
    settings = Settings.from_env({"DICOMWEB_VIEWER": "1", "DICOMWEB_VIEWER_DIR": str(tmp_path)})
    assert settings.viewer is True and settings.viewer_dir == tmp_path
    assert Settings.from_env({}).viewer is False
    args = build_parser().parse_args(["serve", "--viewer", "--viewer-dicomweb-root", "http://x/d"])
    from_args = settings_from(args, "serve")
    assert from_args.viewer is True and from_args.viewer_dicomweb_root == "http://x/d"
    # without --viewer, the environment decides
    assert settings_from(build_parser().parse_args(["serve"]), "serve").viewer is False


def fake_npm(tmp_path: Path) -> Path:
    """An `npm` that packs a tiny @ohif/app tarball, as `npm pack` does."""
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as archive:
        for name, content in {**{f"package/dist/{k}": v for k, v in FAKE_FILES.items()},
                              "package/package.json": b"{}",
                              "package/dist/../../evil.txt": b"x"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    (tmp_path / "pack.tgz").write_bytes(tarball.getvalue())
    script = tmp_path / "npm"
    script.write_text(
        "#!/bin/sh\n"
        'while [ "$1" != "--pack-destination" ]; do shift; done\n'
        f'cp {tmp_path / "pack.tgz"} "$2/ohif-app-0.0.0.tgz"\n'
    )
    script.chmod(0o755)
    return script


def test_fetch_extracts_only_the_dist(tmp_path: Path) -> None:
    settings = Settings(viewer_dir=tmp_path / "cache")
    messages: list[str] = []
    target = viewer.fetch(settings, version="0.0.0", npm=str(fake_npm(tmp_path)),
                          say=messages.append)
    assert target == tmp_path / "cache" / "ohif-0.0.0"
    assert (target / "index.html").read_bytes() == FAKE_FILES["index.html"]
    assert (target / "assets" / "favicon.ico").is_file()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ohif-0.0.0"]
    assert any("downloading" in m for m in messages) and any("ready" in m for m in messages)
    # a second fetch finds it
    viewer.fetch(settings, version="0.0.0", npm="/nonexistent/npm", say=messages.append)
    assert "already" in messages[-1]


def test_fetch_checks_the_pinned_integrity(tmp_path: Path) -> None:
    settings = Settings(viewer_dir=tmp_path / "cache")
    with pytest.raises(viewer.ViewerError, match="integrity"):
        viewer.fetch(settings, npm=str(fake_npm(tmp_path)), say=lambda _: None)
    assert not (tmp_path / "cache" / f"ohif-{viewer.OHIF_VERSION}").exists()


def test_fetch_without_npm_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(viewer.ViewerError, match="npm was not found"):
        viewer.fetch(Settings(viewer_dir=tmp_path / "cache"), say=lambda _: None)


OIDC = {"oidc_issuer": "http://idp.example.org/realms/x/", "oidc_audience": "dicomweb",
        "viewer_oidc_client_id": "ohif-viewer"}


def test_app_config_signs_in_with_the_provider(tmp_path: Path, viewer_cache: Path) -> None:
    """--oidc-issuer with --viewer-oidc-client-id: OHIF's oidc entry, authorization code (PKCE),
    redirects back to this viewer; the page and its configuration need no credentials."""
    with client_for(tmp_path, viewer_cache, **OIDC) as test_client:
        config = config_of(test_client.get("/app-config.js"))
        index = test_client.get("/viewer?StudyInstanceUIDs=1.2.3")
    assert config["oidc"] == [{
        "authority": "http://idp.example.org/realms/x",
        "client_id": "ohif-viewer",
        "redirect_uri": "http://testserver/callback",
        "post_logout_redirect_uri": "http://testserver/",
        "response_type": "code",
        "scope": "openid profile dicomweb:read dicomweb:write",
        "revokeAccessTokenOnSignout": True,
    }]
    assert index.status_code == 200 and "src=/app-config.js>" in index.text


def test_no_sign_in_without_a_client_id(tmp_path: Path, viewer_cache: Path) -> None:
    settings = {**OIDC, "viewer_oidc_client_id": None}
    with client_for(tmp_path, viewer_cache, **settings) as test_client:
        assert "oidc" not in config_of(test_client.get("/app-config.js"))
    with client_for(tmp_path, viewer_cache) as test_client:
        assert "oidc" not in config_of(test_client.get("/app-config.js"))


def test_share_link_page_loads_the_configuration_without_sign_in(
        tmp_path: Path, viewer_cache: Path) -> None:
    """OHIF would send a share link's visitor to the login page before reading `token`: that
    page loads app-config.js?shared=1, which has no `oidc`."""
    creator = Principal("oidc", "admin", ALL_SCOPES)
    with client_for(tmp_path, viewer_cache, **OIDC) as test_client:
        share = test_client.app.state.access.shares.create("1.2.3", creator, 600)
        page = test_client.get(f"/viewer?StudyInstanceUIDs=1.2.3&token={share.token}")
        forged = test_client.get("/viewer?StudyInstanceUIDs=1.2.3&token=forged")
        shared = config_of(test_client.get("/app-config.js?shared=1"))
    assert "src=/app-config.js>" in forged.text  # an invalid link: the sign-in page
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "src=/app-config.js?shared=1>" in page.text
    assert "oidc" not in shared
    assert data_source(shared)["qidoRoot"] == "http://testserver/dicomweb"


def test_viewer_oidc_client_id_option(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--viewer-oidc-client-id", "ohif"])
    assert settings_from(args, "serve").viewer_oidc_client_id == "ohif"
    assert Settings.from_env({"DICOMWEB_VIEWER_OIDC_CLIENT_ID": "x"}).viewer_oidc_client_id == "x"
