"""`dicomweb serve | import | viewer fetch | apikey create|list|revoke | audit verify`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dicomweb.config import ConfigError, Settings, command_options, env_name, parse_value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb", description="DICOMweb server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the DICOMweb server")
    add_setting_options(serve, "serve")

    viewer = commands.add_parser("viewer", help="the OHIF viewer served by `serve --viewer`")
    viewer_commands = viewer.add_subparsers(dest="viewer_command", required=True)
    fetch = viewer_commands.add_parser(
        "fetch", help="download the pinned OHIF viewer build from the npm registry")
    add_setting_options(fetch, "viewer")

    audit = commands.add_parser("audit", help="the audit trail of access to patient data")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the hash chain; name the first altered, inserted or missing record")
    add_setting_options(verify, "audit")

    importer = commands.add_parser("import", help="import files, folders and zip archives")
    importer.add_argument("paths", nargs="+", type=Path)
    importer.add_argument("--no-progress", action="store_true")
    importer.add_argument(
        "--url", help="send through STOW-RS to this running server's DICOMweb root (e.g. "
        "http://127.0.0.1:8042/dicomweb) instead of writing the store directly")
    importer.add_argument(
        "--token", help="bearer token for --url (authenticated servers; env DICOMWEB_TOKEN)")
    add_setting_options(importer, "import")

    from dicomweb.access.cli import add_apikey_parser

    add_apikey_parser(commands, lambda verb: add_setting_options(verb, "apikey"))
    return parser


def add_setting_options(command: argparse.ArgumentParser, name: str) -> None:
    """The settings this command takes as options (config.Settings metadata); each option's
    default is None, so an unset option leaves the environment variable or default in force."""
    for field_name, option, kind, help_text in command_options(name):
        text = f"{help_text} (env {env_name(field_name)})"
        if kind is bool:
            command.add_argument(option, dest=field_name, action="store_const", const="1",
                                 default=None, help=text)
        else:
            command.add_argument(option, dest=field_name, default=None, help=text)


def settings_from(args: argparse.Namespace, command: str) -> Settings:
    """Environment first, then the command's options; raises ConfigError on a bad value."""
    overrides = {}
    for field_name, option, kind, _ in command_options(command):
        raw = getattr(args, field_name, None)
        if raw is not None:
            overrides[field_name] = parse_value(kind, raw, option)
    return Settings.from_env(**overrides)


def serve(args: argparse.Namespace) -> int:
    """Check, bind, create, announce, run (dicomweb.serving says why in that order)."""
    from dicomweb import serving

    settings = settings_from(args, "serve")
    from dicomweb.dimse import process as dimse

    try:
        dimse.check(settings)  # a DIMSE setting that cannot work stops serve before anything
        with serving.metrics_folder():
            serving.check_store(settings)
            # Before binding: an address others can reach is never bound without
            # authentication (the fix it suggests, `dicomweb apikey create`, makes the store).
            if refusal := serving.access_refusal(settings):
                print(f"error: {refusal}", file=sys.stderr)
                return 2
            if settings.viewer and (code := ensure_viewer(settings)):
                return code
            with serving.bind_socket(settings.host, settings.port) as sock:
                # Workers are separate processes: they rebuild settings from these variables.
                os.environ.update(settings.to_env())
                serving.create_store(settings)
                logging.basicConfig(level=settings.log_level.upper(),
                                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
                dimse_service = dimse.start(settings)  # own process, listening before the banner
                try:
                    serving.run(settings, sock)
                finally:
                    if dimse_service:
                        dimse_service.stop()
    except serving.StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
        settings = settings_from(args, "viewer")
        viewer.fetch(settings, say=lambda text: print(text, flush=True))
    except viewer.ViewerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_import(args: argparse.Namespace) -> int:
    from dicomweb import serving

    settings = settings_from(args, "import")
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.url:
        from dicomweb.stowclient import ServerUnusable, import_through_server

        print(f"importing into {args.url} (STOW-RS)", flush=True)
        token = args.token or os.environ.get("DICOMWEB_TOKEN") or None
        try:
            summary = import_through_server(args.url, token, args.paths,
                                            progress=not args.no_progress)
        except ServerUnusable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        from dicomweb.importer import import_paths

        try:
            serving.check_store(settings)
        except serving.StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"importing into {store_description(settings)}", flush=True)
        summary = import_paths(settings, args.paths, progress=not args.no_progress)
    print(summary.report())
    return 0 if not summary.failed else 1


def store_description(settings: Settings) -> str:
    """Which store a local import writes: the folder, or the database (password masked)."""
    from dicomweb.serving import display_url

    blobs = settings.effective_blob_dir
    if settings.database_url is None:
        where = f"{settings.data_dir.resolve()} (SQLite index.sqlite"
        return where + (", blobs/)" if blobs == (settings.data_dir / "blobs").resolve()
                        else f", blobs in {blobs})")
    return f"{display_url(settings.database_url)} (blobs in {blobs})"


def run_audit(args: argparse.Namespace) -> int:
    from dicomweb.audit import AuditTrail
    from dicomweb.store.repository import Store

    settings = settings_from(args, "audit")
    store = Store(settings)
    trail = AuditTrail(store)
    try:
        store.create_schema()
        verdict = trail.verify()
    finally:
        trail.close()
        store.close()
    if verdict.intact:
        print(f"audit trail intact: {verdict.records} records, last {verdict.head_seq} "
              f"(hash {verdict.head_hash})")
        return 0
    print(f"audit trail BROKEN after {verdict.records} intact records: {verdict.problem}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "viewer":
            return run_viewer(args)
        if args.command == "audit":
            return run_audit(args)
        if args.command == "apikey":
            from dicomweb.access.cli import run_apikey

            return run_apikey(args, settings_from(args, "apikey"))
        return run_import(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
