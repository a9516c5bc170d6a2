"""`dicomweb serve | import | viewer fetch`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dicomweb.config import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb", description="DICOMweb server")
    commands = parser.add_subparsers(dest="command", required=True)

    def store_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--data", type=Path, default=None,
                             help="data folder for SQLite and blobs (default ./dicomweb-data)")
        command.add_argument("--database-url", default=None,
                             help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
                                  "(env DICOMWEB_DATABASE_URL)")
        command.add_argument("--blob-dir", type=Path, default=None,
                             help="folder of DICOM files (default DATA/blobs)")

    serve = commands.add_parser("serve", help="run the DICOMweb server")
    serve.add_argument("--host", default=os.environ.get("DICOMWEB_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("DICOMWEB_PORT", "8042")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("DICOMWEB_WORKERS", "1")))
    serve.add_argument("--root-path", default=None, help="DICOMweb mount path (default /dicomweb)")
    serve.add_argument("--public-root", default=None,
                       help="absolute URL clients use for the service (reverse proxies)")
    serve.add_argument("--log-level", default=None)
    serve.add_argument("--viewer", action="store_true", default=None,
                       help="also serve the OHIF viewer at http://HOST:PORT/ (env "
                            "DICOMWEB_VIEWER=1); fetched from npm first if missing")
    viewer_options(serve)
    serve.add_argument("--viewer-dicomweb-root", default=None,
                       help="DICOMweb root the viewer uses when the data is on another server "
                            "(default: this server's root)")
    store_options(serve)

    viewer = commands.add_parser("viewer", help="the OHIF viewer served by `serve --viewer`")
    viewer_commands = viewer.add_subparsers(dest="viewer_command", required=True)
    fetch = viewer_commands.add_parser(
        "fetch", help="download the pinned OHIF viewer build from the npm registry")
    viewer_options(fetch)

    importer = commands.add_parser("import", help="import files, folders and zip archives")
    importer.add_argument("paths", nargs="+", type=Path)
    importer.add_argument("--no-progress", action="store_true")
    store_options(importer)
    return parser


def viewer_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--viewer-dir", type=Path, default=None,
                         help="folder of fetched viewer builds, or of one OHIF build "
                              "(env DICOMWEB_VIEWER_DIR; default ~/.cache/dicomweb/viewer)")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=args.data,
        database_url=args.database_url,
        blob_dir=args.blob_dir,
        root_path=getattr(args, "root_path", None),
        public_root=getattr(args, "public_root", None),
        log_level=getattr(args, "log_level", None),
        viewer=getattr(args, "viewer", None),
        viewer_dir=getattr(args, "viewer_dir", None),
        viewer_dicomweb_root=getattr(args, "viewer_dicomweb_root", None),
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.viewer and (code := ensure_viewer(settings)):
        return code
    # Workers are separate processes: they rebuild settings from these variables.
    for name, value in {
        "DATA_DIR": str(settings.data_dir.resolve()),
        "DATABASE_URL": settings.database_url or "",
        "BLOB_DIR": str(settings.blob_dir.resolve()) if settings.blob_dir else "",
        "ROOT_PATH": settings.root_path,
        "PUBLIC_ROOT": settings.public_root or "",
        "LOG_LEVEL": settings.log_level,
        "VIEWER": "1" if settings.viewer else "",
        "VIEWER_DIR": str(settings.viewer_dir.resolve()) if settings.viewer_dir else "",
        "VIEWER_DICOMWEB_ROOT": settings.viewer_dicomweb_root or "",
    }.items():
        os.environ["DICOMWEB_" + name] = value
    from dicomweb.store.repository import Store

    store = Store(settings)
    store.create_schema()  # once, before workers start
    store.close()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"DICOMweb service at http://{args.host}:{args.port}{settings.root_path}", flush=True)
    if settings.viewer:
        print(f"OHIF viewer at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(
        "dicomweb.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,  # dicomweb.access logs one JSON object per request instead
    )
    return 0


def ensure_viewer(settings: Settings) -> int:
    """Fetch the viewer if it is missing; 0, or 1 with the reason on stderr."""
    from dicomweb import viewer

    if viewer.is_fetched(settings):
        return 0
    try:
        viewer.fetch(settings, say=lambda text: print(text, flush=True))
    except viewer.ViewerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_viewer(args: argparse.Namespace) -> int:
    from dicomweb import viewer

    try:
        settings = Settings.from_env(viewer_dir=args.viewer_dir)
        viewer.fetch(settings, say=lambda text: print(text, flush=True))
    except viewer.ViewerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_import(args: argparse.Namespace) -> int:
    from dicomweb.importer import import_paths

    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = import_paths(settings, args.paths, progress=not args.no_progress)
    print(summary.report())
    return 0 if not summary.failed else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "viewer":
        return run_viewer(args)
    return run_import(args)


if __name__ == "__main__":
    sys.exit(main())
