"""Searching the trail: `GET /audit` filters, and records as JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any

import orjson
from sqlalchemy import Engine, and_, func, or_, select

from dicomweb.audit import tables
from dicomweb.audit.chain import HEAD_ID
from dicomweb.audit.events import ACTIONS
from dicomweb.errors import BadRequest

RECORDS, INDEX, HEAD, PEOPLE = tables.records, tables.index, tables.head, tables.people
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
    """Matching records, newest first. Indexed records are found through audit_index (patient,
    study) and audit_search (user, time); the few written since their last batch are
    filtered on their own columns."""
    statement = select(RECORDS).order_by(RECORDS.c.seq.desc())
    if query.actions:
        statement = statement.where(RECORDS.c.action.in_(query.actions))
    if query.patient or query.study:
        indexed = select(HEAD.c.indexed_seq).where(HEAD.c.id == HEAD_ID).scalar_subquery()
        matching = select(INDEX.c.seq)
        tail = [RECORDS.c.seq > func.coalesce(indexed, 0)]
        if query.patient:
            matching = matching.where(INDEX.c.patient_id == query.patient)
            tail.append(RECORDS.c.studies.contains(
                orjson.dumps({"patient_id": query.patient}).decode()[1:-1]))
        if query.study:
            matching = matching.where(INDEX.c.study_instance_uid == query.study)
            tail.append(RECORDS.c.studies.contains(
                orjson.dumps({"study": query.study}).decode()[1:-1]))
        statement = statement.where(or_(RECORDS.c.seq.in_(matching), and_(*tail)))
    if query.user or query.since or query.until:
        searched = select(func.coalesce(func.max(PEOPLE.c.seq), 0)).scalar_subquery()
        statement = statement.where(or_(
            RECORDS.c.seq.in_(select(PEOPLE.c.seq).where(*people_conditions(PEOPLE, query))),
            and_(RECORDS.c.seq > searched, *people_conditions(RECORDS, query))))
    statement = statement.limit(query.limit).offset(query.offset)
    with engine.connect() as connection:
        rows = connection.execute(statement).mappings().all()
    records = [record_json(row) for row in rows]
    # A tail match is a substring match: keep only records naming both in one study.
    return [r for r in records if matches(r, query)]


def people_conditions(table: Any, query: AuditQuery) -> list[Any]:
    """The user and time filters, on the columns audit_trail and audit_search share."""
    found = []
    if query.user:
        found.append(or_(table.c.who == query.user, table.c.client_id == query.user))
    if query.since:
        found.append(table.c.event_time >= query.since)
    if query.until:
        found.append(table.c.event_time <= query.until)
    return found


def matches(record: dict[str, Any], query: AuditQuery) -> bool:
    if not (query.patient or query.study):
        return True
    return any((not query.patient or s["patient_id"] == query.patient)
               and (not query.study or s["study_instance_uid"] == query.study)
               for s in record["studies"])


def study_json(study: dict[str, Any]) -> dict[str, Any]:
    return {
        "study_instance_uid": study["study"],
        "patient_id": study["patient_id"],
        "issuer_of_patient_id": study["issuer"],
        "series_instance_uids": study["series"],
        "sop_instance_uids": study["instances"],
    }


def record_json(row: Any) -> dict[str, Any]:
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
        "studies": [study_json(study) for study in orjson.loads(row["studies"])],
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }
