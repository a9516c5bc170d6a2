"""Which requests the audit trail records, and as what (PS3.15 A.5.3, IHE BALP)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomweb.audit.events import (
    Subject,
    Target,
    classify,
    merge,
    stored_subjects,
    utc_timestamp,
)

S, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/studies", Target("query")),
    ("GET", "/series", Target("query")),
    ("HEAD", "/instances", Target("query")),
    ("POST", "/studies", Target("create")),
    ("POST", f"/studies/{S}", Target("create", S)),
    ("GET", f"/studies/{S}/series", Target("query", S)),
    ("GET", f"/studies/{S}/instances", Target("query", S)),
    ("GET", f"/studies/{S}/series/{SE}/instances", Target("query", S, SE)),
    ("GET", f"/studies/{S}", Target("read", S)),
    ("GET", f"/studies/{S}/metadata", Target("read", S)),
    ("GET", f"/studies/{S}/series/{SE}/instances/{SOP}/frames/1,2", Target("read", S, SE, SOP)),
    ("GET", f"/studies/{S}/series/{SE}/instances/{SOP}/rt/dose/dvh", Target("read", S, SE, SOP)),
    ("GET", f"/studies/{S}/series/{SE}/mpr/axial", Target("read", S, SE)),
    ("DELETE", f"/studies/{S}", Target("delete", S)),
    ("DELETE", f"/studies/{S}/series/{SE}", Target("delete", S, SE)),
    ("DELETE", f"/studies/{S}/series/{SE}/instances/{SOP}", Target("delete", S, SE, SOP)),
    ("PUT", f"/studies/{S}/labels/ward-7", Target("update", S)),
    ("DELETE", f"/studies/{S}/labels/ward-7", Target("update", S)),
    ("POST", f"/studies/{S}/share", Target("update", S)),
    ("DELETE", "/shares/abc", Target("update")),
    ("GET", "/audit", Target("query")),
    ("GET", "/studies/not-a-uid/metadata", Target("read")),  # names no stored study
    ("GET", "/", None),
    ("OPTIONS", "/", None),
    ("OPTIONS", f"/studies/{S}", None),
    ("GET", "/capabilities", None),
    ("DELETE", "/studies", None),
])
def test_classify(method: str, path: str, expected: Target | None) -> None:
    assert classify(method, path) == expected


def test_stored_instances_grouped_by_study_and_merged_with_the_path() -> None:
    stored = stored_subjects([(S, SE, "1.1"), (S, SE, "1.2"), ("9.9", "9.9.1", "9.9.1.1")])
    merged = merge([Subject(S)], stored)
    assert [(s.study, s.series, s.instances) for s in merged] == [
        (S, [SE], ["1.1", "1.2"]), ("9.9", ["9.9.1"], ["9.9.1.1"])]


#: The pattern classify used to match paths with (the newline aside: `.` stops at one, so it
#: left such a path unaudited; the split finds its resource).
RESOURCE = re.compile(
    r"^/studies/(?P<study>[^/]+)"
    r"(?:/series/(?P<series>[^/]+)(?:/instances/(?P<instance>[^/]+))?)?"
    r"(?P<rest>/.*)?$")
UID = re.compile(r"^[0-9.]{1,64}$")
SEGMENTS = st.sampled_from(["studies", "series", "instances", "frames", "1", "", S, SE,
                            "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25",
                            "x" * 70, "not-a-uid", "rt", "metadata"])


def by_pattern(method: str, path: str) -> Target | None:
    match = RESOURCE.match(path)
    if match is None:
        return None
    study, series, instance = (match[name] if match[name] and UID.match(match[name])
                               else None for name in ("study", "series", "instance"))
    rest = match["rest"] or ""
    if method == "GET":
        searching = rest in ("/series", "/instances") and instance is None
        return Target("query" if searching else "read", study, series, instance)
    if method == "POST":
        return Target("create" if rest == "" and match["series"] is None else "update", study)
    if method == "DELETE" and rest == "":
        return Target("delete", study, series, instance)
    return Target("update", study, series, instance)


@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
       segments=st.lists(SEGMENTS, min_size=1, max_size=9))
def test_classify_reads_resources_as_the_pattern_did(method: str, segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    if path in ("/studies", "/series", "/instances", "/audit") or path.startswith("/shares/"):
        return
    assert classify(method, path) == by_pattern(method, path)


def test_utc_timestamp_is_iso_8601_to_the_microsecond() -> None:
    before = datetime.now(timezone.utc)
    stamp = utc_timestamp()
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= after
