"""Which requests the audit trail records, and as what (PS3.15 A.5.3, IHE BALP)."""

from __future__ import annotations

import pytest

from dicomweb.audit.events import Subject, Target, classify, merge, stored_subjects

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
