"""`dicomweb apikey create|list|revoke`, and the safe-default check of `dicomweb serve`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from dicomweb.access import apikeys
from dicomweb.access.authenticate import is_loopback
from dicomweb.config import Settings
from dicomweb.store.repository import Store


def add_apikey_parser(commands: argparse._SubParsersAction,
                      add_settings: Callable[[argparse.ArgumentParser], None]) -> None:
    """The `apikey` verbs; `add_settings` gives each the store options (--data, …)."""
    parser = commands.add_parser("apikey", help="API keys for modalities, gateways, scripts")
    verbs = parser.add_subparsers(dest="apikey_command", required=True)
    create = verbs.add_parser("create", help="make a key and print it (only this once)")
    create.add_argument("--name", required=True, help="the key's name (audit, revoke)")
    create.add_argument("--scopes", required=True,
                        help="comma-separated: dicomweb:read, dicomweb:write, dicomweb:delete, "
                             "dicomweb:admin")
    create.add_argument("--labels", default=None,
                        help="comma-separated study labels (what it sees with --study-access "
                             "labels; what the studies it stores get)")
    create.add_argument("--expires-days", type=int, default=None,
                        help="refuse the key after this many days")
    listing = verbs.add_parser("list", help="the keys (names, scopes, labels, expiry)")
    revoke = verbs.add_parser("revoke", help="delete a key")
    revoke.add_argument("name")
    for verb in (create, listing, revoke):
        add_settings(verb)


def run_apikey(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings)
    try:
        store.create_schema()
        engine = store.engine
        if args.apikey_command == "create":
            try:
                key, info = apikeys.create_key(engine, args.name, args.scopes, args.labels,
                                               args.expires_days)
            except apikeys.ApiKeyError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(key)
            print(f"API key {info.name!r}: {' '.join(info.scopes)}"
                  + (f"; labels {','.join(info.labels)}" if info.labels else "")
                  + f"; expires {expiry(info.expires_at)}. It is shown only now: store it "
                    "where the client keeps secrets.", file=sys.stderr)
            return 0
        if args.apikey_command == "list":
            rows = apikeys.list_keys(engine)
            if not rows:
                print("no API keys")
            for info in rows:
                print(f"{info.name}\tscopes={','.join(info.scopes)}\t"
                      f"labels={','.join(info.labels) or '-'}\tcreated={info.created_at}\t"
                      f"expires={expiry(info.expires_at)}")
            return 0
        if not apikeys.revoke_key(engine, args.name):
            print(f"error: no API key named {args.name!r}", file=sys.stderr)
            return 1
        print(f"API key {args.name!r} revoked (running servers refuse it within "
              f"{settings.credential_cache_seconds} s)")
        return 0
    finally:
        store.close()


def expiry(epoch: int | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def startup_refusal(settings: Settings, store: Store) -> str | None:
    """Why `serve` must not start (one line saying how to fix it), or None."""
    if is_loopback(settings.host) or settings.allow_anonymous or settings.oidc_issuer:
        return None
    try:
        if apikeys.any_key(store.engine):
            return None
    except SQLAlchemyError:  # no store or no key table yet: no key either
        pass
    return (f"refusing to serve {settings.host} without authentication: set --oidc-issuer "
            "(with --oidc-audience), or create a key with `dicomweb apikey create --name NAME "
            "--scopes dicomweb:read`, or pass --allow-anonymous to serve everyone")
