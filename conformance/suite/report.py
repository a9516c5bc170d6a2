"""Text, Markdown and JSON renderings of results, and side-by-side comparison."""

from __future__ import annotations

from pathlib import Path

import orjson

from .runner import RunReport

SYMBOLS = {
    "pass": "pass",
    "fail": "FAIL",
    "not supported": "n/s",
    "error": "ERROR",
    "skipped": "skip",
}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def text_table(report: RunReport, detail_width: int = 90) -> str:
    """Plain-text table for stdout."""
    rows = [
        (r.id, r.reference, r.outcome.value, _clip(r.detail, detail_width)) for r in report.results
    ]
    headers = ("check", "reference", "outcome", "detail")
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]
    widths[-1] = len(headers[-1])
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: RunReport) -> str:
    """A Markdown report of one run."""
    deletion = {True: "yes", False: "no", None: "not tested"}[report.deletion_supported]
    lines = [
        f"# DICOMweb conformance: {_md(report.label)}",
        "",
        f"- Server: `{report.url}`",
        f"- Run: `{report.run_id}` started {report.started}, {report.duration_s:.1f} s",
        f"- Deletion (`DELETE /studies/{{uid}}`) supported: {deletion}",
        f"- **{report.summary()}**",
        "",
        "| Check | Reference | Outcome | Detail |",
        "|---|---|---|---|",
    ]
    for r in report.results:
        outcome = SYMBOLS[r.outcome.value]
        lines.append(f"| `{r.id}` | {_md(r.reference)} | {outcome} | {_md(r.detail)} |")
    return "\n".join(lines) + "\n"


def write_json(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


def load_json(path: Path) -> dict[str, object]:
    body = orjson.loads(path.read_bytes())
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ValueError(f"{path}: not a conformance result file")
    return body


def compare_markdown(a: dict[str, object], b: dict[str, object]) -> str:
    """Side-by-side Markdown table of two ``--json`` result files."""
    name_a, name_b = str(a.get("label") or a.get("url")), str(b.get("label") or b.get("url"))
    if name_a == name_b:
        name_a, name_b = f"{name_a} (A)", f"{name_b} (B)"
    res_a = {r["id"]: r for r in a["results"]}  # type: ignore[union-attr, index]
    res_b = {r["id"]: r for r in b["results"]}  # type: ignore[union-attr, index]
    ids = list(res_a) + [i for i in res_b if i not in res_a]
    lines = [
        f"# DICOMweb conformance: {_md(name_a)} vs {_md(name_b)}",
        "",
        f"| Check | Reference | {_md(name_a)} | {_md(name_b)} |",
        "|---|---|---|---|",
    ]
    differ = 0
    for cid in ids:
        ra, rb = res_a.get(cid, {}), res_b.get(cid, {})
        ref = ra.get("reference") or rb.get("reference") or ""
        oa, ob = ra.get("outcome", "—"), rb.get("outcome", "—")
        differ += oa != ob
        lines.append(f"| `{cid}` | {_md(str(ref))} | {_cell(ra)} | {_cell(rb)} |")
    lines += [
        "",
        f"- **{_md(name_a)}**: {a.get('summary_line', '')}",
        f"- **{_md(name_b)}**: {b.get('summary_line', '')}",
        f"- {differ} check(s) with different outcomes",
    ]
    return "\n".join(lines) + "\n"


def _cell(result: dict[str, object]) -> str:
    if not result:
        return "—"
    outcome = SYMBOLS.get(str(result.get("outcome")), str(result.get("outcome")))
    detail = str(result.get("detail") or "")
    if outcome == "pass" or not detail:
        return outcome
    return f"{outcome}: {_md(_clip(detail, 60))}"
