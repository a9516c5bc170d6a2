"""Check registry, outcomes and the per-run context shared by all checks.

A check is a small function ``f(ctx) -> str | None`` registered with :func:`check`.
It returns a one-line detail on success, raises :class:`CheckFailed` when the server
violates PS3.18, :class:`NotSupported` when an optional feature is absent, and any
other exception is reported as an *error* of the check itself.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from .context import Context

CheckFunc = Callable[["Context"], "str | None"]

#: HTTP statuses that mean "this optional resource/feature is not implemented".
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})


class Outcome(str, enum.Enum):
    """Result of one check."""

    PASS = "pass"
    FAIL = "fail"
    NOT_SUPPORTED = "not supported"
    ERROR = "error"
    SKIPPED = "skipped"


class CheckFailed(AssertionError):
    """The server answered, but not as PS3.18 requires."""


class NotSupported(Exception):
    """The server does not implement an optional feature."""


class Skipped(Exception):
    """The check was deliberately not run (e.g. ``--no-cleanup``)."""


@dataclass(frozen=True)
class Check:
    """A registered conformance check."""

    id: str
    reference: str
    title: str
    func: CheckFunc
    module: str
    order: int


@dataclass
class CheckResult:
    """Outcome of running one :class:`Check` against a server."""

    id: str
    reference: str
    title: str
    module: str
    outcome: Outcome
    detail: str = ""
    duration_ms: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "reference": self.reference,
            "title": self.title,
            "module": self.module,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass
class Registry:
    """All checks, in registration order."""

    checks: list[Check] = field(default_factory=list)

    def add(self, item: Check) -> None:
        if any(existing.id == item.id for existing in self.checks):
            raise ValueError(f"duplicate check id {item.id!r}")
        self.checks.append(item)

    def select(self, patterns: Iterable[str] | None = None) -> list[Check]:
        """Checks whose id matches one of ``patterns`` (glob, or substring without ``*?``)."""
        wanted = [p.strip() for p in (patterns or []) if p.strip()]
        if not wanted:
            return list(self.checks)
        return [c for c in self.checks if any(_matches(c.id, p) for p in wanted)]


def _matches(check_id: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(check_id, pattern)
    return pattern in check_id


REGISTRY = Registry()


def check(check_id: str, reference: str, title: str) -> Callable[[CheckFunc], CheckFunc]:
    """Register ``func`` as conformance check ``check_id`` citing ``reference``."""

    def decorator(func: CheckFunc) -> CheckFunc:
        module = func.__module__.rsplit(".", 1)[-1]
        REGISTRY.add(Check(check_id, reference, title, func, module, len(REGISTRY.checks)))
        return func

    return decorator


def ensure(condition: object, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` is truthy."""
    if not condition:
        raise CheckFailed(message)


def fail(message: str) -> NoReturn:
    raise CheckFailed(message)


def unsupported(message: str) -> NoReturn:
    raise NotSupported(message)
