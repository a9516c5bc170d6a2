"""``python -m conformance``: run the DICOMweb conformance suite against a server.

Examples::

    python -m conformance --url http://127.0.0.1:8042/dicomweb --report out.md --json out.json
    python -m conformance --url http://127.0.0.1:8043/dicom-web --only 'qido.*' --no-cleanup
    python -m conformance --compare ours.json orthanc.json --report comparison.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.suite import REGISTRY
from conformance.suite.client import Client
from conformance.suite.registry import CheckResult, Outcome
from conformance.suite.report import compare_markdown, load_json, markdown, text_table, write_json
from conformance.suite.runner import probe, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="DICOMweb (PS3.18) conformance suite for any server.",
    )
    parser.add_argument("--url", help="DICOMweb base URL, e.g. http://127.0.0.1:8042/dicomweb")
    parser.add_argument("--report", type=Path, help="write a Markdown report")
    parser.add_argument("--json", type=Path, help="write machine-readable results")
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only checks whose id matches (glob or substring; repeatable, comma-separated)",
    )
    parser.add_argument("--no-cleanup", action="store_true", help="keep the uploaded test data")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if checks fail")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--label", default="", help="server name used in reports")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A_JSON", "B_JSON"),
        help="side-by-side Markdown table of two --json result files",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-check progress")
    args = parser.parse_args(argv)
    if not (args.url or args.compare or args.list):
        parser.error("one of --url, --compare or --list is required")
    return args


def _patterns(only: list[str] | None) -> list[str] | None:
    if not only:
        return None
    return [p for value in only for p in value.split(",") if p.strip()]


def _list_checks() -> int:
    for item in REGISTRY.checks:
        print(f"{item.id:40} {item.reference:22} {item.title}")
    return 0


def _compare(paths: list[Path], out: Path | None) -> int:
    try:
        a, b = (load_json(p) for p in paths)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = compare_markdown(a, b)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"comparison written to {out}")
    else:
        print(text)
    return 0


def _progress(result: CheckResult) -> None:
    mark = {Outcome.PASS: ".", Outcome.FAIL: "F", Outcome.ERROR: "E"}.get(result.outcome, "s")
    print(mark, end="", flush=True, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return _list_checks()
    if args.compare:
        return _compare(args.compare, args.report)
    reason = probe(Client(args.url, timeout=args.timeout))
    if reason:
        print(f"error: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 2
    report = run(
        args.url,
        only=_patterns(args.only),
        cleanup=not args.no_cleanup,
        timeout=args.timeout,
        label=args.label,
        progress=None if args.quiet else _progress,
    )
    if not args.quiet:
        print(file=sys.stderr)
    print(text_table(report))
    print()
    print(report.summary())
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(report), encoding="utf-8")
    if args.json:
        write_json(report, args.json)
    return 1 if report.failed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
