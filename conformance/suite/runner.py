"""Run selected checks against a server and collect a :class:`RunReport`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from . import data as testdata
from .client import Client, describe
from .context import Context
from .registry import (
    REGISTRY,
    Check,
    CheckFailed,
    CheckResult,
    NotSupported,
    Outcome,
    Skipped,
)

CLEANUP_ID = "cleanup.delete-study"


@dataclass
class RunReport:
    """Everything written to ``--json``: server, run id, data UIDs and results."""

    url: str
    label: str
    run_id: str
    started: str
    duration_s: float = 0.0
    study_uids: dict[str, str] = field(default_factory=dict)
    setup: dict[str, str] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    @property
    def failed(self) -> bool:
        return any(r.outcome in (Outcome.FAIL, Outcome.ERROR) for r in self.results)

    @property
    def deletion_supported(self) -> bool | None:
        for r in self.results:
            if r.id == CLEANUP_ID and r.outcome is not Outcome.SKIPPED:
                return r.outcome is Outcome.PASS
        return None

    def summary(self) -> str:
        text = f"{self.count(Outcome.PASS)} passed, {self.count(Outcome.FAIL)} failed"
        text += f", {self.count(Outcome.NOT_SUPPORTED)} not supported"
        for extra in (Outcome.ERROR, Outcome.SKIPPED):
            if n := self.count(extra):
                text += f", {n} {extra.value}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "label": self.label,
            "run_id": self.run_id,
            "started": self.started,
            "duration_s": round(self.duration_s, 2),
            "study_uids": self.study_uids,
            "setup": self.setup,
            "deletion_supported": self.deletion_supported,
            "summary": {o.value: self.count(o) for o in Outcome},
            "summary_line": self.summary(),
            "results": [r.to_json() for r in self.results],
        }


def run_check(item: Check, ctx: Context) -> CheckResult:
    """Run one check, mapping exceptions to outcomes; never raises."""
    start = time.perf_counter()
    outcome, detail = Outcome.PASS, ""
    try:
        detail = item.func(ctx) or ""
    except CheckFailed as exc:
        outcome, detail = Outcome.FAIL, str(exc)
    except NotSupported as exc:
        outcome, detail = Outcome.NOT_SUPPORTED, str(exc)
    except Skipped as exc:
        outcome, detail = Outcome.SKIPPED, str(exc)
    except requests.Timeout as exc:
        outcome, detail = Outcome.ERROR, f"timeout: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported, never propagated
        outcome, detail = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
    elapsed = (time.perf_counter() - start) * 1000
    detail = " ".join(str(detail).split())
    return CheckResult(item.id, item.reference, item.title, item.module, outcome, detail, elapsed)


def probe(client: Client) -> str | None:
    """``None`` if the server answers at all, else the reason it cannot be tested."""
    try:
        client.get("studies?limit=1", accept="application/dicom+json")
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(
    url: str,
    *,
    only: list[str] | None = None,
    cleanup: bool = True,
    timeout: float = 30.0,
    label: str = "",
    progress: Callable[[CheckResult], None] | None = None,
) -> RunReport:
    """Upload the test data, run the selected checks, then delete the data."""
    started = time.perf_counter()
    client = Client(url, timeout=timeout)
    data = testdata.build()
    ctx = Context(client, data, cleanup=cleanup)
    report = RunReport(
        url=url,
        label=label or url,
        run_id=data.run_id,
        started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        study_uids={key: study.uid for key, study in data.studies.items()},
    )
    ctx.upload_all()
    for key, up in ctx.uploads.items():
        report.setup[key] = up.error or f"HTTP {up.status}"
    selected = REGISTRY.select(only)
    if all(c.id != CLEANUP_ID for c in selected):
        selected += [c for c in REGISTRY.checks if c.id == CLEANUP_ID]
    for item in selected:
        result = run_check(item, ctx)
        report.results.append(result)
        if progress:
            progress(result)
    report.duration_s = time.perf_counter() - started
    return report


__all__ = ["RunReport", "describe", "probe", "run", "run_check"]
