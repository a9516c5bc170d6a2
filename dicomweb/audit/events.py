"""What an audited request is: the operation it asks for, the studies it names, and the event
recorded for it.

The operations follow DICOM PS3.15 A.5.3 and IHE BALP's RESTful patterns: a search is a
`query` (A.5.3.10 Query, BALP Query), a retrieve of anything below a study is a `read`
(A.5.3.3 Begin Transferring DICOM Instances, A.5.3.6 DICOM Instances Accessed, BALP Read), STOW
is a `create` (A.5.3.7 DICOM Instances Transferred), DELETE of a study, series or instance is a
`delete` (A.5.3.8 DICOM Study Deleted, A.5.3.6 with action D), and changes to a study's access
(labels, share links) are `update`s. A request refused by the access layer is recorded with the
action `denied` and the operation it asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

ACTIONS = ("create", "read", "query", "delete", "update", "denied")
SEARCH_PATHS = ("/studies", "/series", "/instances")
UID_LENGTH = 64
UID_CHARACTERS = "0123456789."
READ_METHODS = ("GET", "HEAD")


class Target(NamedTuple):
    """The operation a request asks for and the resource its path names (a tuple: made for
    every audited request, and a frozen dataclass costs several times as much to build)."""

    operation: str  # create | read | query | delete | update
    study: str | None = None
    series: str | None = None
    instance: str | None = None


def classify(method: str, path: str) -> Target | None:
    """`path` is relative to the DICOMweb root; None for requests that touch no patient data
    (capabilities, unknown paths, CORS preflights). Split, not matched with a regular
    expression: every audited request comes here first."""
    if method == "OPTIONS":
        return None
    if path in SEARCH_PATHS:
        if method in READ_METHODS:
            return Target("query")
        return Target("create") if method == "POST" and path == "/studies" else None
    if path == "/audit":  # PS3.15 A.5.3.2 Audit Log Used: reading the trail is audited too
        return Target("query") if method in READ_METHODS else None
    if path.startswith("/shares/"):
        return Target("read" if method in READ_METHODS else "update")
    resource = _resource(path)
    if resource is None:
        return None
    named, study, series, instance, rest = resource
    study, series, instance = _uid(study), _uid(series), _uid(instance)
    if method in READ_METHODS:
        searching = rest in ("/series", "/instances") and instance is None
        return Target("query" if searching else "read", study, series, instance)
    if method == "POST":
        stow = rest == "" and named == 1
        return Target("create" if stow else "update", study)
    if method == "DELETE" and rest == "":
        return Target("delete", study, series, instance)
    return Target("update", study, series, instance)


def _resource(path: str) -> tuple[int, str, str | None, str | None, str] | None:
    """/studies/{study}[/series/{series}[/instances/{instance}]][/rest]: how many of the three
    the path names, the three (None where absent), and the rest ("" or "/…")."""
    parts = path.split("/")
    count = len(parts)
    if count < 3 or parts[0] or parts[1] != "studies" or not parts[2]:
        return None
    series = instance = None
    used = 3
    if count >= 5 and parts[3] == "series" and parts[4]:
        series, used = parts[4], 5
        if count >= 7 and parts[5] == "instances" and parts[6]:
            instance, used = parts[6], 7
    rest = "/" + "/".join(parts[used:]) if count > used else ""
    return used // 2, parts[2], series, instance, rest


def _uid(value: str | None) -> str | None:
    """PS3.5 9.1: at most 64 characters, digits and dots. Anything else names no stored
    study."""
    if value is None or len(value) > UID_LENGTH or value.strip(UID_CHARACTERS):
        return None
    return value


_second: tuple[int, str] = (-1, "")


def utc_timestamp() -> str:
    """Now, UTC, to the microsecond: "2025-01-31T12:00:00.000000Z". The part up to the second
    is formatted once per second (one tuple swapped in: safe from any thread)."""
    global _second
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    known = _second
    if known[0] != second:
        known = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{known[1]}.{micros:06d}Z"


@dataclass
class Subject:
    """One study a request touched, with the series and instances it named or stored."""

    study: str
    series: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    #: (PatientID, IssuerOfPatientID) from the index; None until resolved.
    patient: tuple[str | None, str | None] | None = None


@dataclass
class AuditEvent:
    """One request, as it will be appended to the trail."""

    event_time: str
    request_id: str
    action: str
    operation: str
    status: int
    user_kind: str
    who: str
    client_id: str | None
    client_address: str | None
    method: str
    path: str
    query: str
    subjects: list[Subject] = field(default_factory=list)


def subjects_of(target: Target) -> list[Subject]:
    if target.study is None:
        return []
    return [Subject(target.study, [target.series] if target.series else [],
                    [target.instance] if target.instance else [])]


def stored_subjects(stored: list[tuple[str, str, str]]) -> list[Subject]:
    """(study, series, SOP instance) of the instances a STOW stored, grouped by study."""
    by_study: dict[str, Subject] = {}
    for study, series, sop in stored:
        subject = by_study.setdefault(study, Subject(study))
        if series not in subject.series:
            subject.series.append(series)
        subject.instances.append(sop)
    return list(by_study.values())


def merge(subjects: list[Subject], more: list[Subject]) -> list[Subject]:
    """One subject per study: those of `more` join the same study's entry in `subjects`."""
    merged = {subject.study: subject for subject in subjects}
    for subject in more:
        known = merged.get(subject.study)
        if known is None:
            merged[subject.study] = subject
            continue
        for mine, theirs in ((known.series, subject.series),
                             (known.instances, subject.instances)):
            seen = set(mine)
            mine.extend(uid for uid in theirs if uid not in seen)
    return list(merged.values())
