"""Settings: one dataclass, filled from the command line and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

ENV_PREFIX = "DICOMWEB_"


@dataclass(frozen=True)
class Settings:
    """Everything the application needs to know, passed to `create_app`.

    Each field can be set by an environment variable `DICOMWEB_<FIELD>` (upper case).
    """

    data_dir: Path = Path("dicomweb-data")
    #: SQLAlchemy URL; None means SQLite at `<data_dir>/index.sqlite`.
    database_url: str | None = None
    #: Folder of the DICOM files; None means `<data_dir>/blobs`.
    blob_dir: Path | None = None
    #: Path under which the DICOMweb service is mounted.
    root_path: str = "/dicomweb"
    #: Absolute URL of the service as clients see it (reverse proxies); None means derive it
    #: from the request (Forwarded / X-Forwarded-* headers, then Host).
    public_root: str | None = None
    #: Origins allowed by CORS; "*" allows any origin (without credentials).
    cors_origins: tuple[str, ...] = ("*",)
    #: Upper bound of a QIDO page; larger `limit` values are cut to it with a Warning header.
    qido_max_results: int = 10000
    #: What STOW does with a SOP Instance UID already stored with different bytes:
    #: "reject" (keep the stored one, fail with 0x0111) or "overwrite".
    duplicates: str = "reject"
    #: Bytes of decoded volumes kept in memory for MPR.
    volume_cache_bytes: int = 1 << 30
    log_level: str = "info"
    #: Serve the OHIF viewer at the root of the server (`dicomweb serve --viewer`).
    viewer: bool = False
    #: Folder of the fetched viewer builds (`ohif-<version>/`), or of one OHIF build itself
    #: (a folder with `index.html`); None means `~/.cache/dicomweb/viewer`.
    viewer_dir: Path | None = None
    #: DICOMweb root the viewer talks to when it is not this server (another origin); None means
    #: this server's root as the browser reaches it.
    viewer_dicomweb_root: str | None = None

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
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `DICOMWEB_*` variables; keyword overrides that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        text = {
            "database_url": str,
            "root_path": str,
            "public_root": str,
            "duplicates": str,
            "log_level": str,
            "viewer_dicomweb_root": str,
        }
        for name, convert in text.items():
            if (raw := env.get(ENV_PREFIX + name.upper())) not in (None, ""):
                values[name] = convert(raw)
        for name in ("data_dir", "blob_dir", "viewer_dir"):
            if raw := env.get(ENV_PREFIX + name.upper()):
                values[name] = Path(raw)
        for name in ("qido_max_results", "volume_cache_bytes"):
            if raw := env.get(ENV_PREFIX + name.upper()):
                values[name] = int(raw)
        if raw := env.get(ENV_PREFIX + "CORS_ORIGINS"):
            values["cors_origins"] = tuple(o.strip() for o in raw.split(",") if o.strip())
        if raw := env.get(ENV_PREFIX + "VIEWER"):
            values["viewer"] = raw.strip().lower() in ("1", "true", "yes", "on")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        return settings.normalised()

    def normalised(self) -> Settings:
        root = "/" + self.root_path.strip("/") if self.root_path.strip("/") else ""
        public = self.public_root.rstrip("/") if self.public_root else None
        if self.duplicates not in ("reject", "overwrite"):
            raise ValueError(f"duplicates must be 'reject' or 'overwrite', not {self.duplicates!r}")
        return replace(self, root_path=root, public_root=public)
