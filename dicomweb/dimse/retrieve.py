"""C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3): the instances the Identifier names, each sent
by a C-STORE sub-operation as stored (its own transfer syntax when the peer accepted it, else
transcoded to one it accepted, losslessly), with a Pending response after each and a final
response counting completed, failed and warning sub-operations.

The handler bound to EVT_C_MOVE / EVT_C_GET (`plan_move`, `plan_get`) decides what to send
(`RetrievePlan`); `serve_move` / `serve_get` (installed in pynetdicom's Query/Retrieve service
class by dimse/hooks.py) run the sub-operations and answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import uid as uids
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import code_to_category

from dicomweb.access import READ, Principal
from dicomweb.attributes import Level
from dicomweb.dimse import reads
from dicomweb.dimse.find import LEVELS, ROOT_OF_MODEL, UNIQUE_KEY, IdentifierError, key_value
from dicomweb.dimse.find import query_level as find_level
from dicomweb.dimse.peers import Destination
from dicomweb.errors import NotAcceptable
from dicomweb.pixels.codecs import LOSSLESS_TRANSFER_SYNTAXES
from dicomweb.qido import Condition, SearchQuery, validate_value
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.transcoding import can_transcode, transcode_instance

log = logging.getLogger(__name__)

# PS3.4 Tables C.4-2 (C-MOVE) and C.4-3 (C-GET) statuses.
SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
WARNING_FAILURES = 0xB000  # sub-operations complete, one or more failures or warnings
UNABLE_TO_PERFORM = 0xA702  # refused: out of resources, unable to perform sub-operations
DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
NOT_AUTHORIZED = 0x0124
#: Number of … Sub-operations are US (PS3.7 Table 9.3-10).
MAX_SUBOPERATIONS = 65535
#: Targets of a transcode when the peer does not accept the stored syntax: native first.
FALLBACK_ORDER = (uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian)
LOSSLESS_TARGETS = frozenset(
    {*FALLBACK_ORDER, uids.DeflatedExplicitVRLittleEndian, *LOSSLESS_TRANSFER_SYNTAXES}
)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255


@dataclass
class RetrievePlan:
    """What a C-MOVE or C-GET will do: fail at once with `status`, or send `instances`."""

    instances: list[InstanceLocation] = field(default_factory=list)
    store: Store | None = None
    status: int | None = None
    comment: str | None = None
    destination: Destination | None = None
    originator: str = ""


def refused(status: int, comment: str) -> RetrievePlan:
    return RetrievePlan(status=status, comment=comment)


# --- planning (the EVT_C_MOVE / EVT_C_GET handlers) ------------------------------------------


def plan_retrieve(store: Store, principal: Principal, identifier: Dataset, model: str,
                  max_instances: int = MAX_SUBOPERATIONS) -> RetrievePlan:
    if not principal.has(READ):
        return refused(NOT_AUTHORIZED, f"{principal.subject} may not retrieve")
    root = ROOT_OF_MODEL.get(model)
    if root is None:
        return refused(IDENTIFIER_DOES_NOT_MATCH, "unsupported Query/Retrieve model")
    try:
        level = find_level(identifier, root)
        keys = unique_keys(identifier, root, level)
        instances = select_instances(store, principal, level, keys, max_instances + 1)
    except IdentifierError as exc:
        return refused(exc.status, exc.message)
    if len(instances) > max_instances:
        return refused(UNABLE_TO_PERFORM, f"more than {max_instances} instances match")
    return RetrievePlan(instances=instances, store=store, originator=principal.subject)


def unique_keys(identifier: Dataset, root: str, level: str) -> dict[str, str]:
    """PS3.4 C.4.2.2.1: the unique key of the retrieve level (one value or a list) and, when
    given, single values for the unique keys above it."""
    levels = LEVELS[root]
    keys: dict[str, str] = {}
    for name in levels[: levels.index(level) + 1]:
        tag = int(UNIQUE_KEY[name], 16)
        value = key_value(identifier[tag]) if tag in identifier else None
        if value is None:
            if name == level:
                raise IdentifierError(f"the {level} level needs its unique key", tag)
            continue
        if name != level and "\\" in value:
            raise IdentifierError(f"{name} is above {level}: one value only", tag)
        if "*" in value or "?" in value:
            raise IdentifierError("unique keys are matched by value, not wildcards", tag)
        try:
            validate_value(identifier[tag].keyword, (UNIQUE_KEY[name],), value)
        except Exception as exc:  # BadRequest from QIDO's checks
            raise IdentifierError(str(exc), tag) from None
        keys[name] = value
    return keys


SEARCH_LEVEL = {"PATIENT": Level.STUDY, "STUDY": Level.STUDY, "SERIES": Level.SERIES,
                "IMAGE": Level.INSTANCE}
KEYWORD = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
           "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def select_instances(store: Store, principal: Principal, level: str, keys: dict[str, str],
                     limit: int) -> list[InstanceLocation]:
    """The instances the unique keys name, through QIDO's engine (what the principal sees),
    each series in its stable order."""
    query = SearchQuery(level=SEARCH_LEVEL[level], limit=limit)
    for name, value in keys.items():
        query.conditions.append(Condition(KEYWORD[name], (UNIQUE_KEY[name],), value))
    rows = reads.search(store, query, principal).rows
    wanted_sops = None
    if level == "IMAGE":
        wanted_sops = {json_text(row, UNIQUE_KEY["IMAGE"]) for row in rows}
    scopes: list[tuple[str, str | None]] = []
    for row in rows:
        study = json_text(row, UNIQUE_KEY["STUDY"])
        series = json_text(row, UNIQUE_KEY["SERIES"]) if level in ("SERIES", "IMAGE") else None
        if (study, series) not in scopes:
            scopes.append((study, series))
    found: list[InstanceLocation] = []
    for study, series in scopes:
        for location in reads.locate(store, principal, study, series):
            if wanted_sops is None or location.sop_instance_uid in wanted_sops:
                found.append(location)
                if len(found) >= limit:
                    return found
    return found


def json_text(row: dict[str, Any], tag: str) -> str:
    values = row.get(tag, {}).get("Value", [])
    return str(values[0]) if values else ""


# --- sending one instance -----------------------------------------------------------------


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """Transfer syntaxes the peer accepted for `sop_class` with us as the storage SCU."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu
    ]


def transcode_target(stored: str, accepted: list[str]) -> str | None:
    """A lossless syntax the peer accepted that the stored one can become; native first."""
    ranked = [ts for ts in FALLBACK_ORDER if ts in accepted] + [
        ts for ts in accepted if ts not in FALLBACK_ORDER
    ]
    for target in ranked:
        if target in LOSSLESS_TARGETS and can_transcode(stored, target):
            return target
    return None


def send_instance(assoc: Association, store: Store, location: InstanceLocation, msg_id: int,
                  **kwargs: Any) -> int | None:
    """One C-STORE sub-operation: the peer's status, or None when it could not be sent."""
    accepted = accepted_syntaxes(assoc, location.sop_class_uid)
    path = store.blobs.path(location.blob_key)
    try:
        if location.transfer_syntax_uid in accepted:
            response = assoc.send_c_store(path, msg_id=msg_id, **kwargs)
        else:
            target = transcode_target(location.transfer_syntax_uid, accepted)
            if target is None:
                log.warning("%s: the peer accepts %s in none of %s", location.sop_instance_uid,
                            location.sop_class_uid, accepted or "no transfer syntax")
                return None
            response = send_transcoded(assoc, store, path, target, msg_id, **kwargs)
    except (OSError, ValueError, NotAcceptable) as exc:
        log.warning("sending %s failed: %s", location.sop_instance_uid, exc)
        return None
    return int(response.Status) if "Status" in response else None


def send_transcoded(assoc: Association, store: Store, path: Path, target: str, msg_id: int,
                    **kwargs: Any) -> Dataset:
    data = transcode_instance(path.read_bytes(), target)
    temp = store.blobs.new_temp_path()
    try:
        temp.write_bytes(data)
        return assoc.send_c_store(temp, msg_id=msg_id, **kwargs)
    finally:
        store.blobs.discard(temp)


def prefer_sendable_syntaxes(proposed: list[PresentationContext],
                             receiving: set[str]) -> None:
    """For the storage contexts a C-GET requester proposes to receive on (`receiving`: SOP
    Classes with the SCP role proposed), put first the syntaxes any stored instance can be
    sent in losslessly, in the requester's order: the acceptor takes the first proposed, and
    one it can never produce (e.g. the retired Explicit VR Big Endian) would fail every
    sub-operation."""
    for context in proposed:
        if context.abstract_syntax in receiving:
            syntaxes = list(context.transfer_syntax)
            ranked = [ts for ts in syntaxes if ts in LOSSLESS_TARGETS] + [
                ts for ts in syntaxes if ts not in LOSSLESS_TARGETS
            ]
            context.transfer_syntax = ranked


def storage_contexts(instances: list[InstanceLocation]) -> list[PresentationContext]:
    """What a C-MOVE proposes to its destination: each SOP Class in each stored transfer
    syntax, and in native little endian for a transcode."""
    classes: dict[str, list[str]] = {}
    for location in instances:
        syntaxes = classes.setdefault(location.sop_class_uid, [])
        if location.transfer_syntax_uid not in syntaxes:
            syntaxes.append(location.transfer_syntax_uid)
    contexts = [
        build_context(sop_class, [syntax])
        for sop_class, syntaxes in classes.items()
        for syntax in syntaxes
    ] + [build_context(sop_class, list(FALLBACK_ORDER)) for sop_class in classes]
    if len(contexts) > MAX_CONTEXTS:  # one context per class, every syntax in it
        contexts = [
            build_context(sop_class, list(dict.fromkeys([*syntaxes, *FALLBACK_ORDER])))
            for sop_class, syntaxes in classes.items()
        ][:MAX_CONTEXTS]
    return contexts


# --- the sub-operations and responses -------------------------------------------------------


class Progress:
    """Sub-operation counts (PS3.4 C.4.2.1.6) and the failed SOP Instance UIDs."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.completed = 0
        self.failed = 0
        self.warning = 0
        self.failed_uids: list[str] = []

    def record(self, location: InstanceLocation, status: int | None) -> None:
        self.remaining -= 1
        category = code_to_category(status) if status is not None else "Failure"
        if category == "Success":
            self.completed += 1
        elif category == "Warning":
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(location.sop_instance_uid)

    def fill(self, rsp: C_MOVE | C_GET, *, remaining: bool) -> None:
        if remaining:
            rsp.NumberOfRemainingSuboperations = self.remaining
        rsp.NumberOfCompletedSuboperations = self.completed
        rsp.NumberOfFailedSuboperations = self.failed
        rsp.NumberOfWarningSuboperations = self.warning


def new_response(kind: type[C_MOVE] | type[C_GET], req: C_MOVE | C_GET, status: int) -> Any:
    rsp = kind()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp.Status = status
    return rsp


def failed_list_identifier(progress: Progress, context: PresentationContext) -> BytesIO:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = progress.failed_uids
    syntax = context.transfer_syntax[0]
    return BytesIO(encode(ds, syntax.is_implicit_VR, syntax.is_little_endian,
                          syntax.is_deflated))


def run_plan(scp: Any, req: C_MOVE | C_GET, context: PresentationContext, plan: RetrievePlan,
             send: Callable[[InstanceLocation, int], int | None],
             still_open: Callable[[], bool]) -> None:
    """Send each planned instance with `send`, answering Pending after each; then the final
    response (or Cancel, with the remaining count, when the peer sent C-CANCEL)."""
    kind = type(req)
    cx_id = context.context_id
    progress = Progress(len(plan.instances))
    for number, location in enumerate(plan.instances, start=1):
        if not scp.assoc.is_established:
            return  # the requester went away: nobody to answer
        if scp.is_cancelled(req.MessageID):
            rsp = new_response(kind, req, CANCEL)
            progress.fill(rsp, remaining=True)
            rsp.Identifier = failed_list_identifier(progress, context)
            scp.dimse.send_msg(rsp, cx_id)
            return
        status = send(location, number % 65536) if still_open() else None
        progress.record(location, status)
        if progress.remaining:
            rsp = new_response(kind, req, PENDING)
            progress.fill(rsp, remaining=True)
            scp.dimse.send_msg(rsp, cx_id)
    if progress.failed == len(plan.instances):
        final = UNABLE_TO_PERFORM
    elif progress.failed or progress.warning:
        final = WARNING_FAILURES
    else:
        final = SUCCESS
    rsp = new_response(kind, req, final)
    progress.fill(rsp, remaining=False)
    if final != SUCCESS:
        rsp.Identifier = failed_list_identifier(progress, context)
    scp.dimse.send_msg(rsp, cx_id)


def answer_at_once(scp: Any, req: C_MOVE | C_GET, context: PresentationContext,
                   plan: RetrievePlan) -> bool:
    """Refusals and empty retrieves are answered without sub-operations; True if answered."""
    if plan.status is None and plan.instances:
        return False
    rsp = new_response(type(req), req, plan.status or SUCCESS)
    if plan.status is None:
        Progress(0).fill(rsp, remaining=False)
    elif plan.comment:
        rsp.ErrorComment = plan.comment[:64]
    scp.dimse.send_msg(rsp, context.context_id)
    return True


def planned(scp: Any, event: evt.EventType, req: C_MOVE | C_GET,
            context: PresentationContext) -> RetrievePlan:
    try:
        plan = evt.trigger(scp.assoc, event, {"request": req, "context": context.as_tuple})
    except Exception:
        log.exception("planning a retrieve failed")
        return refused(UNABLE_TO_PROCESS, "the server could not process the request")
    return plan if isinstance(plan, RetrievePlan) else refused(UNABLE_TO_PROCESS, "no plan")


def serve_get(scp: Any, req: C_GET, context: PresentationContext) -> None:
    """C-GET: sub-operations on the requesting association itself."""
    plan = planned(scp, evt.EVT_C_GET, req, context)
    if answer_at_once(scp, req, context, plan):
        return
    store = plan.store
    assert store is not None
    run_plan(scp, req, context, plan,
             send=lambda loc, msg_id: send_instance(scp.assoc, store, loc, msg_id),
             still_open=lambda: scp.assoc.is_established)


def serve_move(scp: Any, req: C_MOVE, context: PresentationContext) -> None:
    """C-MOVE: sub-operations on a new association to the configured destination."""
    from dicomweb.dimse.hooks import context_kwargs

    plan = planned(scp, evt.EVT_C_MOVE, req, context)
    if answer_at_once(scp, req, context, plan):
        return
    destination, store = plan.destination, plan.store
    assert destination is not None and store is not None
    sub = scp.assoc.ae.associate(
        destination.host, destination.port,
        **context_kwargs(ae_title=destination.ae_title, contexts=storage_contexts(plan.instances)),
    )
    if not sub.is_established:
        where = f"{destination.ae_title} at {destination.host}:{destination.port}"
        answer_at_once(scp, req, context, refused(UNABLE_TO_PERFORM, f"cannot reach {where}"))
        return
    try:
        run_plan(scp, req, context, plan,
                 send=lambda loc, msg_id: send_instance(
                     sub, store, loc, msg_id,
                     originator_aet=plan.originator, originator_id=req.MessageID),
                 still_open=lambda: sub.is_established)
    finally:
        if sub.is_established:
            sub.release()
