"""The OHIF viewer, served by `dicomweb serve --viewer` at the root of the server.

The built viewer (the `dist/` folder of the npm package `@ohif/app`, pinned to OHIF_VERSION) is
never part of this repository: `dicomweb viewer fetch` downloads it with `npm pack` into a cache
folder shared by every data folder and server (`~/.cache/dicomweb/viewer/ohif-<version>/`, or
`$XDG_CACHE_HOME/dicomweb/viewer/…`, or `DICOMWEB_VIEWER_DIR`/`--viewer-dir`). The viewer's
`app-config.js` is generated per request, pointing OHIF's DICOMweb data source at this server
(or at `viewer_dicomweb_root` when the data lives at another origin).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from dicomweb.access import principal_of
from dicomweb.config import Settings
from dicomweb.urls import service_base_url

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
#: `npm view @ohif/app@3.13.2 dist.integrity`: the tarball `npm pack` fetches must match it.
OHIF_INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
DATA_SOURCE = "@ohif/extension-default.dataSourcesModule.dicomweb"

#: Media types by suffix; Python's `mimetypes` misses some (`.wasm` before 3.12, `.jsonc`).
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".map": "application/json",
    ".webapp": "application/x-web-app-manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".onnx": "application/octet-stream",
}
#: Headers of every viewer response: OHIF needs cross-origin isolation (SharedArrayBuffer for
#: its decoders and volume rendering).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
}
NO_CACHE = "no-cache"
#: Query parameter of the app-config.js a share link's page loads (no sign-in).
SHARED = "shared"
APP_CONFIG_SCRIPT = re.compile(r"""(src=["']?)/app-config\.js""")
#: Bundles whose names carry a content hash never change.
HASHED_NAME = re.compile(r"\.[0-9a-f]{16}\.(js|wasm)$|^[0-9a-f]{16}\.wasm$")
#: A last path segment that names a file (`app.js`, `x.wasm`), as opposed to a client-side
#: route, which may contain UIDs (`/viewer/1.2.840.113619`) whose "suffix" is a number.
FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


class ViewerError(RuntimeError):
    """The viewer cannot be fetched or found; the message says what to do."""


def default_viewer_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dicomweb" / "viewer"


def viewer_dir(settings: Settings) -> Path:
    return Path(settings.viewer_dir) if settings.viewer_dir else default_viewer_dir()


def dist_dir(settings: Settings, version: str = OHIF_VERSION) -> Path:
    """The folder served: `viewer_dir` itself when it holds a build (`index.html`, e.g. a custom
    OHIF build), else the fetched `viewer_dir/ohif-<version>`."""
    root = viewer_dir(settings)
    if (root / "index.html").is_file():
        return root
    return root / f"ohif-{version}"


def is_fetched(settings: Settings) -> bool:
    return (dist_dir(settings) / "index.html").is_file()


# --- fetching ----------------------------------------------------------------------------
def fetch(
    settings: Settings,
    *,
    version: str = OHIF_VERSION,
    say: Callable[[str], None] = print,
    npm: str | None = None,
) -> Path:
    """Download `@ohif/app@version` with `npm pack` and keep its `dist/` in the viewer folder.
    Returns the folder; does nothing when it is already there."""
    target = dist_dir(settings, version)
    if (target / "index.html").is_file():
        say(f"OHIF viewer {version} already in {target}")
        return target
    npm = npm or shutil.which("npm")
    if not npm:
        raise ViewerError(
            "npm was not found on PATH: the OHIF viewer is fetched from the npm registry with "
            "`npm pack`. Install Node.js (with npm), then run `dicomweb viewer fetch`."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        say(f"downloading {OHIF_PACKAGE}@{version} from the npm registry (about 50 MB)...")
        tarball = _npm_pack(npm, f"{OHIF_PACKAGE}@{version}", work)
        if version == OHIF_VERSION:
            _check_integrity(tarball, OHIF_INTEGRITY)
        say(f"extracting the viewer into {target} ...")
        count = _extract_dist(tarball, work / "dist")
        if not (work / "dist" / "index.html").is_file():
            raise ViewerError(f"{tarball.name} has no package/dist/index.html")
        try:
            os.replace(work / "dist", target)
        except OSError:
            if not (target / "index.html").is_file():  # not a concurrent fetch that won
                raise
    say(f"OHIF viewer {version} ready: {count} files in {target}")
    return target


def _npm_pack(npm: str, spec: str, work: Path) -> Path:
    command = [npm, "pack", spec, "--pack-destination", str(work), "--silent",
               "--no-audit", "--no-fund"]
    error = ""
    for _attempt in range(2):  # the registry sometimes drops a connection: try twice
        try:
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            error = "npm pack timed out after 900 s"
            continue
        tarballs = sorted(work.glob("*.tgz"))
        if done.returncode == 0 and tarballs:
            return tarballs[0]
        error = (done.stderr or done.stdout).strip()
    raise ViewerError(f"`npm pack {spec}` failed: {error[-2000:]}")


def _check_integrity(tarball: Path, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with tarball.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise ViewerError(f"{tarball.name} does not match the pinned integrity {integrity}")


def _extract_dist(tarball: Path, out: Path) -> int:
    """Regular files under `package/dist/` only, never outside `out` (no links, no `..`)."""
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if len(parts) < 3 or parts[:2] != ("package", "dist") or not member.isfile():
                continue
            relative = parts[2:]
            if any(part in ("..", "") or part.startswith("/") for part in relative):
                continue
            path = out.joinpath(*relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, path.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            count += 1
    return count


# --- app-config.js -----------------------------------------------------------------------
def data_source_configuration(dicomweb_root: str) -> dict[str, Any]:
    """OHIF's DICOMweb data source (extension-default `dicomweb`) for this server."""
    return {
        "friendlyName": "dicomweb",
        "name": "dicomweb",
        "qidoRoot": dicomweb_root,
        "wadoRoot": dicomweb_root,
        "wadoUriRoot": dicomweb_root,
        "stowRoot": dicomweb_root,
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True},
        "omitQuotationForMultipartRequest": True,
        "dicomUploadEnabled": True,
    }


#: What OHIF asks the provider for: who the user is, and the two scopes the viewer needs.
VIEWER_OIDC_SCOPE = "openid profile dicomweb:read dicomweb:write"


def oidc_configuration(settings: Settings, origin: str) -> list[dict[str, Any]] | None:
    """OHIF's `oidc` list (platform/app/src/utils/OpenIdConnectRoutes.tsx): with
    `response_type: code` OHIF 3.13 uses oidc-client-ts, which always adds PKCE (S256). Then
    every route needs a signed-in user and every DICOMweb request carries its access token.
    None unless both the issuer and the viewer's client id are configured."""
    if not (settings.oidc_issuer and settings.viewer_oidc_client_id):
        return None
    return [{
        "authority": settings.oidc_issuer.rstrip("/"),
        "client_id": settings.viewer_oidc_client_id,
        "redirect_uri": f"{origin}/callback",
        "post_logout_redirect_uri": f"{origin}/",
        "response_type": "code",
        "scope": VIEWER_OIDC_SCOPE,
        "revokeAccessTokenOnSignout": True,
    }]


def app_config(dicomweb_root: str, oidc: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`window.config` of OHIF 3.13 (the shape of the `app-config.js` in its dist)."""
    config: dict[str, Any] = {
        "name": "dicomweb serve --viewer",
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": True,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "experimentalStudyBrowserSort": False,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "allowMultiSelectExport": False,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "dicomweb",
        "dataSources": [
            {
                "namespace": DATA_SOURCE,
                "sourceName": "dicomweb",
                "configuration": data_source_configuration(dicomweb_root),
            }
        ],
    }
    if oidc:
        config["oidc"] = oidc
    return config


def app_config_js(dicomweb_root: str, oidc: list[dict[str, Any]] | None = None) -> str:
    config = orjson.dumps(app_config(dicomweb_root, oidc), option=orjson.OPT_INDENT_2).decode()
    return (
        "/** @type {AppTypes.Config} */\n"
        "// Generated by `dicomweb serve --viewer` for this server (dicomweb/viewer.py).\n"
        f"window.config = {config};\n"
    )


# --- serving -----------------------------------------------------------------------------
def media_type(path: Path) -> str:
    import mimetypes

    suffix = path.suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class Viewer:
    """GET/HEAD of any path not taken by the DICOMweb service: the viewer's files, the
    generated `app-config.js`, and `index.html` for client-side routes (`/viewer?…`, `/mpr`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dist = dist_dir(settings).resolve()
        root = settings.root_path
        #: Paths the viewer never answers: the DICOMweb service's own (its 404s stay its own).
        self.reserved = (root,) if root else ("/studies", "/series", "/instances")

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        if any(path == r or path.startswith(r + "/") for r in self.reserved):
            return self.not_found(path)
        if path == "/app-config.js":
            root = self.settings.viewer_dicomweb_root or service_base_url(request, self.settings)
            oidc = None if SHARED in request.query_params else oidc_configuration(
                self.settings, viewer_origin(request, self.settings))
            return Response(app_config_js(root.rstrip("/"), oidc),
                            headers=self.headers(NO_CACHE), media_type=MEDIA_TYPES[".js"])
        if not (self.dist / "index.html").is_file():
            return PlainTextResponse(
                f"The OHIF viewer is not in {self.dist}: run `dicomweb viewer fetch`.",
                status_code=503, headers=self.headers(NO_CACHE))
        file = self.resolve(path)
        if file is not None:
            return self.file(file)
        if FILE_SUFFIX.search(path.rsplit("/", 1)[-1]):
            return self.not_found(path)
        # The access layer took a valid URL token (a share link's) out of the query already.
        if principal_of(request).kind == "share" and oidc_configuration(self.settings, ""):
            return self.shared_index()
        return self.file(self.dist / "index.html")  # a client-side route

    def shared_index(self) -> Response:
        """A share link (`/viewer?StudyInstanceUIDs=…&token=…`) on a viewer that signs users
        in: OHIF would send the visitor to the login page before its Mode route reads `token`
        (routes/Mode/Mode.tsx → updateAuthServiceAndCleanUrl, which makes it the bearer of
        every request). So this page loads the configuration without `oidc`."""
        page = (self.dist / "index.html").read_text(encoding="utf-8")
        shared = APP_CONFIG_SCRIPT.sub(rf"\1/app-config.js?{SHARED}=1", page, count=1)
        return Response(shared, media_type=MEDIA_TYPES[".html"], headers=self.headers(NO_CACHE))

    def resolve(self, path: str) -> Path | None:
        relative = path.lstrip("/")
        if not relative or "\x00" in relative:  # no file name holds NUL (the OS refuses it)
            return None
        candidate = (self.dist / relative).resolve()
        if not candidate.is_relative_to(self.dist) or not candidate.is_file():
            return None
        return candidate

    def file(self, file: Path) -> Response:
        if file.name == "index.html":
            cache = NO_CACHE
        elif HASHED_NAME.search(file.name):
            cache = "public, max-age=31536000, immutable"
        else:
            cache = "public, max-age=3600"
        return FileResponse(file, media_type=media_type(file), headers=self.headers(cache))

    def headers(self, cache: str) -> dict[str, str]:
        return {**ISOLATION_HEADERS, "Cache-Control": cache}

    def not_found(self, path: str) -> Response:
        body = orjson.dumps({"error": {"status": 404, "message": f"{path} not found"}})
        return Response(body, status_code=404, media_type="application/json")


def viewer_origin(request: Request, settings: Settings) -> str:
    """Scheme and host of the viewer as the browser reaches it (the DICOMweb base URL without
    the service's mount path), for the OpenID redirect URIs."""
    base = service_base_url(request, settings)
    root = settings.root_path
    return base[: -len(root)] if root and base.endswith(root) else base


def viewer_routes(settings: Settings) -> list[Route]:
    """The catch-all route, to be placed after every other route."""
    viewer = Viewer(settings)
    return [Route("/{path:path}", viewer.endpoint, methods=["GET"], name="viewer")]
