"""Settings: one dataclass, filled from the command line and the environment.

Each field is one setting: its environment variable is `DICOMWEB_<FIELD>` (upper case), its
command-line option (when it has one) is named in the field's metadata, and its value is parsed
and checked from the field's type (`int`, `bool`, `Path`, `tuple[str, ...]`, `Literal[...]`,
optionally `| None`). A bad value raises `ConfigError` with one line naming the variable or
option and what it accepts, so `dicomweb serve` can say it and stop.
"""

from __future__ import annotations

import ipaddress
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

ENV_PREFIX = "DICOMWEB_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting has a value it cannot take; the message is one line for the operator."""


def setting(default: Any, help: str, *, option: str | None = None,
            commands: tuple[str, ...] = ("serve",), minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A Settings field: `option` is its command-line flag on `commands` (None: env only);
    a number outside `minimum`..`maximum` is refused at start-up."""
    return field(default=default, metadata={"help": help, "option": option, "commands": commands,
                                            "minimum": minimum, "maximum": maximum})


STORE_COMMANDS = ("serve", "import", "apikey", "audit")


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


#: Pixel memory defaults follow the machine: a quarter of its memory for concurrent pixel
#: work, a sixteenth (256 MiB to 4 GiB) for what one request may decode.
DEFAULT_PIXEL_MEMORY_BYTES = max(1 << 30, physical_memory_bytes() // 4)
DEFAULT_MAX_DECODED_BYTES = min(4 << 30, max(256 << 20, physical_memory_bytes() // 16))


@dataclass(frozen=True)
class Settings:
    """Everything the application needs to know, passed to `create_app`."""

    data_dir: Path = setting(Path("dicomweb-data"), "data folder: SQLite index and blobs",
                             option="--data", commands=STORE_COMMANDS)
    #: SQLAlchemy URL; None means SQLite at `<data_dir>/index.sqlite`.
    database_url: str | None = setting(
        None, "SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/db",
        option="--database-url", commands=STORE_COMMANDS)
    #: Folder of the DICOM files; None means `<data_dir>/blobs`.
    blob_dir: Path | None = setting(None, "folder of the stored DICOM files (default DATA/blobs)",
                                    option="--blob-dir", commands=STORE_COMMANDS)
    host: str = setting("127.0.0.1", "listening address", option="--host")
    port: int = setting(8042, "listening port", option="--port", minimum=1, maximum=65535)
    workers: int = setting(1, "uvicorn worker processes", option="--workers", minimum=1)
    #: Path under which the DICOMweb service is mounted.
    root_path: str = setting("/dicomweb", "path of the DICOMweb service", option="--root-path")
    #: Absolute URL of the service as clients see it (reverse proxies); None means derive it
    #: from the request (Forwarded / X-Forwarded-* headers, then Host).
    public_root: str | None = setting(
        None, "absolute URL clients use for the service (reverse proxies)",
        option="--public-root")
    #: Origins allowed by CORS; "*" allows any origin (without credentials).
    cors_origins: tuple[str, ...] = setting(("*",), "comma-separated origins allowed by CORS")
    #: Upper bound of a QIDO page; larger `limit` values are cut to it with a Warning header.
    qido_max_results: int = setting(10000, "largest QIDO page", minimum=1)
    #: What STOW does with a SOP Instance UID already stored with different bytes:
    #: "reject" (keep the stored one, fail with 0x0111) or "overwrite".
    duplicates: Literal["reject", "overwrite"] = setting(
        "reject", "same SOP Instance UID with other bytes: reject or overwrite")
    #: Largest decoded pixel data one request may decode (a frame to render or convert, an
    #: instance to transcode, a volume for MPR), from the attributes and the codestream header.
    max_decoded_bytes: int = setting(DEFAULT_MAX_DECODED_BYTES,
                                     "largest decoded pixel data of one request in bytes",
                                     minimum=1)
    #: Memory all concurrent pixel work (render, transcode, MPR, RT rasters) may hold at once,
    #: shared by the worker processes; requests wait for their share, then get 503.
    pixel_memory_bytes: int = setting(DEFAULT_PIXEL_MEMORY_BYTES,
                                      "memory for concurrent pixel work in bytes (all workers)",
                                      minimum=1)
    #: Seconds a pixel request waits for memory before it is answered 503 with Retry-After.
    pixel_wait_seconds: float = setting(10.0, "seconds a pixel request waits for memory", minimum=0)
    #: Most frame numbers in one /frames request.
    max_frames_per_request: int = setting(1000, "most frame numbers in one frames request",
                                          minimum=1)
    #: Bytes of decoded volumes kept in memory for MPR.
    volume_cache_bytes: int = setting(1 << 30, "memory for decoded volumes (MPR)", minimum=0)
    #: Processes parsing STOW parts beside each server process; 0 means the cores divided
    #: between the workers.
    ingest_processes: int = setting(0, "processes parsing uploaded instances (0: one per core)",
                                    option="--ingest-processes", minimum=0)
    #: Memory for answers kept under their ETag (series metadata, rendered images).
    response_cache_bytes: int = setting(256 << 20, "memory for cached metadata and rendered "
                                        "images, in bytes", minimum=0)
    #: Largest request body (a STOW request, all parts) and largest zip member `import` takes.
    max_upload_bytes: int = setting(4 << 30, "largest request body / archive member in bytes",
                                    minimum=1)
    #: Most parts in one multipart STOW request.
    max_parts: int = setting(10000, "most parts in one STOW request", minimum=1)
    #: Largest inflated Deflated Explicit VR Little Endian dataset (it is inflated in memory).
    max_inflated_bytes: int = setting(256 << 20, "largest inflated deflated dataset in bytes",
                                      minimum=1)
    #: Largest inflated/compressed size ratio of a deflated dataset or a zip member, checked
    #: once it is past 16 MiB (zip bombs reach ~1000).
    max_inflate_ratio: int = setting(200, "largest inflate ratio of deflated data and archives",
                                     minimum=1)
    #: Items and data elements inside sequences, all levels, one uploaded data set may hold
    #: (pydicom holds ~1 KB each); whole-slide images with per-frame positions need ~8 a tile.
    max_nested_elements: int = setting(250_000, "most items and elements in the sequences of "
                                       "one uploaded data set", minimum=1)
    #: Peers whose Forwarded / X-Forwarded-* headers are believed (comma list of addresses or
    #: networks, "*" for any), as uvicorn's and gunicorn's --forwarded-allow-ips.
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"), "proxies whose Forwarded / X-Forwarded-* headers are trusted",
        option="--forwarded-allow-ips")
    #: After SIGTERM, how long requests in flight (a STOW upload) may take to finish before
    #: they are cancelled; below the 30 s an orchestrator waits before it kills.
    shutdown_grace_seconds: int = setting(
        25, "seconds requests in flight get to finish after SIGTERM",
        option="--shutdown-grace-seconds", minimum=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = setting(
        "info", "log level", option="--log-level")
    #: Serve the OHIF viewer at the root of the server (`dicomweb serve --viewer`).
    viewer: bool = setting(False, "also serve the OHIF viewer at http://HOST:PORT/; fetched "
                           "from npm first if missing", option="--viewer")
    #: Folder of the fetched viewer builds (`ohif-<version>/`), or of one OHIF build itself
    #: (a folder with `index.html`); None means `~/.cache/dicomweb/viewer`.
    viewer_dir: Path | None = setting(
        None, "folder of fetched viewer builds, or of one OHIF build (default "
        "~/.cache/dicomweb/viewer)", option="--viewer-dir", commands=("serve", "viewer"))
    #: DICOMweb root the viewer talks to when it is not this server (another origin); None means
    #: this server's root as the browser reaches it.
    viewer_dicomweb_root: str | None = setting(
        None, "DICOMweb root the viewer uses when the data is on another server",
        option="--viewer-dicomweb-root")
    #: Record every request touching patient data in the audit trail (PS3.15 A.5, IHE BALP).
    audit: Literal["on", "off"] = setting(
        "on", "audit trail of every access to patient data: on or off", option="--audit")
    #: OAuth client id of the OHIF viewer at the OpenID provider (`--oidc-issuer`): with it,
    #: `serve --viewer` makes OHIF sign in (authorization code with PKCE) and send the token.
    viewer_oidc_client_id: str | None = setting(
        None, "OpenID client id of the served OHIF viewer (with --oidc-issuer): users sign in",
        option="--viewer-oidc-client-id")

    # --- access control (README "Access control") ------------------------------------------
    #: OpenID Connect issuer whose JWT access tokens are accepted (discovery at
    #: ISSUER/.well-known/openid-configuration); None: no tokens.
    oidc_issuer: str | None = setting(None, "OpenID Connect issuer URL whose access tokens "
                                      "are accepted", option="--oidc-issuer")
    #: Required in a token's `aud`.
    oidc_audience: str | None = setting(None, "audience required in access tokens",
                                        option="--oidc-audience")
    #: List claim holding scopes (besides the space-separated `scope` claim).
    oidc_roles_claim: str = setting("roles", "token list claim holding dicomweb:* scopes",
                                    option="--oidc-roles-claim")
    #: List claim holding the caller's study labels.
    oidc_labels_claim: str = setting("dicomweb_labels", "token list claim holding study labels",
                                     option="--oidc-labels-claim")
    #: "all": every caller with dicomweb:read sees every study; "labels": only studies carrying
    #: one of the caller's labels (admins see all).
    study_access: Literal["all", "labels"] = setting(
        "all", "which studies a caller sees: all, or those sharing one of its labels",
        option="--study-access")
    #: Longest life of a share link (`POST /studies/{s}/share?expires=SECONDS`).
    share_max_seconds: int = setting(30 * 86400, "longest life of a share link, in seconds",
                                     option="--share-max-seconds")
    #: Serve callers without credentials on any address (opt-out of the safe default).
    allow_anonymous: bool = setting(False, "let callers without credentials in, even on a "
                                    "non-loopback address", option="--allow-anonymous")
    #: How long a verified API key or share link is trusted without asking the database again
    #: (revocation reaches other workers and hosts within this delay).
    credential_cache_seconds: int = setting(10, "seconds an API key or share check is cached")
    #: TLS certificate and key (PEM) for https without a reverse proxy.
    ssl_certfile: Path | None = setting(None, "TLS certificate (PEM) for https",
                                        option="--ssl-certfile")
    ssl_keyfile: Path | None = setting(None, "TLS private key (PEM) for https",
                                       option="--ssl-keyfile")
    #: Port of the DICOM Upper Layer (DIMSE) service beside DICOMweb; None means off.
    dimse_port: int | None = setting(
        None, "port of the DIMSE service (C-ECHO/STORE/FIND/MOVE/GET); off when unset",
        option="--dimse-port", minimum=1, maximum=65535)
    ae_title: str = setting("DICOMWEB", "AE title of the DIMSE service", option="--ae-title")
    #: C-MOVE destinations (and Storage Commitment report addresses): `AET=host:port` each.
    dimse_destinations: tuple[str, ...] = setting(
        (), "DIMSE move destinations, comma-separated AET=host:port")
    #: Calling AE titles allowed on the DIMSE service: `AET[@host]=scope+scope[/label+label]`
    #: each (dimse/peers.py); empty means anyone, allowed only on a loopback bind.
    dimse_peers: tuple[str, ...] = setting(
        (), "DIMSE peers, comma-separated AET[@host]=read+write[/label+label]")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def effective_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None,
                 **overrides: object) -> Settings:
        """Settings from `DICOMWEB_*` variables; keyword overrides that are not None win.
        Raises ConfigError naming the first bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, kind in field_types().items():
            raw = env.get(env_name(name))
            if raw is None or (raw == "" and kind is not str):
                continue  # unset; an empty variable means "not set" except for plain text
            values[name] = parse_value(kind, raw, env_name(name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).normalised()  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """Every setting as the variable that gives it back (for worker processes)."""
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, Path):
                text = str(value.resolve())
            else:
                text = str(value)
            out[env_name(item.name)] = text
        return out

    def normalised(self) -> Settings:
        root = "/" + self.root_path.strip("/") if self.root_path.strip("/") else ""
        public = self.public_root.rstrip("/") if self.public_root else None
        for name, kind in field_types().items():  # values given in code are checked too
            check_choice(kind, getattr(self, name), name)
            check_range(name, getattr(self, name))
        check_public_root(public)
        check_networks(self.forwarded_allow_ips)
        check_access_settings(self)
        return replace(self, root_path=root, public_root=public)


def check_access_settings(settings: Settings) -> None:
    """Combinations that would silently weaken access control are refused."""
    if settings.oidc_issuer and not settings.oidc_audience:
        # Without an audience, any token the issuer made for any other application would do.
        raise ConfigError(f"{env_name('oidc_audience')} (--oidc-audience) must be set with "
                          f"{env_name('oidc_issuer')}: the audience your provider puts in "
                          "access tokens for this server")
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together "
                          f"({env_name('ssl_certfile')}, {env_name('ssl_keyfile')})")
    if settings.share_max_seconds < 1:
        raise ConfigError(f"{env_name('share_max_seconds')}={settings.share_max_seconds}: "
                          "must be at least 1")
    if settings.credential_cache_seconds < 0:
        raise ConfigError(f"{env_name('credential_cache_seconds')}="
                          f"{settings.credential_cache_seconds}: must be 0 or more")


@cache
def limits_of(name: str) -> tuple[float | None, float | None]:
    (item,) = [f for f in fields(Settings) if f.name == name]
    return item.metadata.get("minimum"), item.metadata.get("maximum")


def check_range(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low, high = limits_of(name)
    if not math.isfinite(value):
        raise ConfigError(f"{env_name(name)}={value!r}: must be a finite number")
    if low is not None and value < low:
        raise ConfigError(f"{env_name(name)}={value!r}: must be at least {low:g}")
    if high is not None and value > high:
        raise ConfigError(f"{env_name(name)}={value!r}: must be at most {high:g}")


def check_public_root(url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{env_name('public_root')}={url!r}: must be an absolute http or "
                          "https URL, e.g. https://pacs.example.org/dicomweb")


def check_networks(entries: tuple[str, ...]) -> None:
    """Addresses and networks must parse; other words are peer names (as uvicorn's)."""
    for entry in entries:
        if entry == "*" or not set(entry) <= set("0123456789abcdefABCDEF.:/"):
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{env_name('forwarded_allow_ips')}: {entry!r} is not an address "
                              "or network (e.g. 10.0.0.0/8)") from None


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


@cache
def field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {item.name: hints[item.name] for item in fields(Settings)}


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _base(kind: Any) -> Any:
    if _is_union(kind):
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return inner
    return kind


def parse_value(kind: Any, raw: str, source: str) -> object:
    """Text from the environment or the command line → the setting's type."""
    base = _base(kind)
    text = raw.strip()
    if base is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"{source}={raw!r}: must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{source}={raw!r}: must be an integer") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{source}={raw!r}: must be a number") from None
    if base is Path:
        return Path(text)
    if typing.get_origin(base) is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if typing.get_origin(base) is Literal:
        value = text.lower()
        check_choice(base, value, source)
        return value
    return raw


def check_choice(kind: Any, value: object, source: str) -> None:
    base = _base(kind)
    if value is None or typing.get_origin(base) is not Literal:
        return
    choices = typing.get_args(base)
    if value not in choices:
        label = source if source.startswith(ENV_PREFIX) else env_name(source)
        raise ConfigError(f"{label}={value!r}: must be one of {', '.join(choices)}")


def command_options(command: str) -> list[tuple[str, str, Any, str]]:
    """(field name, option, type, help) of the settings the command takes as options."""
    options = []
    for item in fields(Settings):
        option = item.metadata.get("option")
        if option and command in item.metadata.get("commands", ()):
            kind = field_types()[item.name]
            options.append((item.name, option, kind, item.metadata.get("help", "")))
    return options
