"""Searching the trail: `GET /audit` filters, and records as JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any

import orjson
from sqlalchemy import Engine, or_, select

from dicomweb.audit import tables
from dicomweb.audit.events import ACTIONS
from dicomweb.errors import BadRequest

RECORDS, SUBJECTS = tables.records, tables.subjects
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class AuditQuery:
    patient: str | None = None
    study: str | None = None
    user: str | None = None
    actions: tuple[str, ...] = ()
    since: str | None = None  # timestamps in the trail's own format (UTC, sortable text)
    until: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse_query(params: Any) -> AuditQuery:
    """`patient`, `study`, `user`, `action` (comma list), `since`, `until` (ISO 8601; a date
    alone means its first / last instant; no offset means UTC), `limit`, `offset`."""
    actions = tuple(a.strip() for a in params.get("action", "").split(",") if a.strip())
    for action in actions:
        if action not in ACTIONS:
            raise BadRequest(f"action={action!r}: must be one of {', '.join(ACTIONS)}",
                             parameter="action")
    return AuditQuery(
        patient=params.get("patient") or None,
        study=params.get("study") or None,
        user=params.get("user") or None,
        actions=actions,
        since=_instant(params.get("since"), "since", end_of_day=False),
        until=_instant(params.get("until"), "until", end_of_day=True),
        limit=_count(params.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_count(params.get("offset"), "offset", 0, 0, None),
    )


def _instant(value: str | None, name: str, *, end_of_day: bool) -> str | None:
    if not value:
        return None
    try:
        if DATE_ONLY.match(value):
            day = datetime.fromisoformat(value).date()
            moment = datetime.combine(day, time.max if end_of_day else time.min, timezone.utc)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise BadRequest(f"{name}={value!r}: not an ISO 8601 date or date-time",
                         parameter=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count(value: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}={value!r}: not an integer", parameter=name) from None
    if number < low:
        raise BadRequest(f"{name}={value!r}: must be at least {low}", parameter=name)
    return min(number, high) if high is not None else number


def search(engine: Engine, query: AuditQuery) -> list[dict[str, Any]]:
    """Matching records, newest first, each with its studies."""
    statement = select(RECORDS).order_by(RECORDS.c.seq.desc())
    if query.patient or query.study:
        matching = select(SUBJECTS.c.seq)
        if query.patient:
            matching = matching.where(SUBJECTS.c.patient_id == query.patient)
        if query.study:
            matching = matching.where(SUBJECTS.c.study_instance_uid == query.study)
        statement = statement.where(RECORDS.c.seq.in_(matching))
    if query.user:
        statement = statement.where(
            or_(RECORDS.c.who == query.user, RECORDS.c.client_id == query.user))
    if query.actions:
        statement = statement.where(RECORDS.c.action.in_(query.actions))
    if query.since:
        statement = statement.where(RECORDS.c.event_time >= query.since)
    if query.until:
        statement = statement.where(RECORDS.c.event_time <= query.until)
    statement = statement.limit(query.limit).offset(query.offset)
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(statement).mappings()]
        studies: dict[int, list[dict[str, Any]]] = {row["seq"]: [] for row in rows}
        if rows:
            for subject in connection.execute(
                select(SUBJECTS).where(SUBJECTS.c.seq.in_(list(studies)))
                .order_by(SUBJECTS.c.seq, SUBJECTS.c.item)
            ).mappings():
                studies[subject["seq"]].append(study_json(subject))
    return [record_json(row, studies[row["seq"]]) for row in rows]


def study_json(subject: Any) -> dict[str, Any]:
    return {
        "study_instance_uid": subject["study_instance_uid"],
        "patient_id": subject["patient_id"],
        "issuer_of_patient_id": subject["issuer_of_patient_id"],
        "series_instance_uids": orjson.loads(subject["series_instance_uids"]),
        "sop_instance_uids": orjson.loads(subject["sop_instance_uids"]),
    }


def record_json(row: dict[str, Any], studies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "time": row["event_time"],
        "action": row["action"],
        "operation": row["operation"],
        "status": row["status"],
        "user": row["who"],
        "user_kind": row["user_kind"],
        "client_id": row["client_id"],
        "client_address": row["client_address"],
        "request_id": row["request_id"],
        "method": row["method"],
        "path": row["path"],
        "query": row["query"],
        "studies": studies,
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }
