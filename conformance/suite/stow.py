"""STOW-RS: the Store Transaction (PS3.18 10.5)."""

from __future__ import annotations

import orjson

from .client import describe, encode_multipart, expect_status, json_object
from .context import Context, has_tag, string, values
from .data import Instance, parse, to_bytes
from .registry import check, ensure, fail, unsupported

REFERENCED_SOP_SEQ = "00081199"
FAILED_SOP_SEQ = "00081198"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
REF_SOP_CLASS = "00081150"
REF_SOP_INSTANCE = "00081155"


def _items(body: dict[str, object], tag: str) -> list[dict[str, object]]:
    return [item for item in values(body, tag) if isinstance(item, dict)]


def _failure_reasons(body: dict[str, object]) -> list[str]:
    """FailureReason values of the FailedSOPSequence, as hex strings."""
    reasons = []
    for item in _items(body, FAILED_SOP_SEQ):
        found = values(item, FAILURE_REASON)
        reasons.append(f"0x{found[0]:04X}" if found and isinstance(found[0], int) else "absent")
    return reasons


def _is_stored(ctx: Context, inst: Instance) -> bool:
    query = f"StudyInstanceUID={inst.study_uid}&SOPInstanceUID={inst.sop_uid}"
    resp = ctx.client.qido("instances", query)
    if resp.status_code != 200:
        resp = ctx.client.qido(
            f"studies/{inst.study_uid}/instances", f"SOPInstanceUID={inst.sop_uid}"
        )
    return resp.status_code == 200 and resp.content.strip() not in (b"", b"[]")


@check("stow.store-200", "PS3.18 10.5.3", "Store of valid instances answers 200 OK")
def store_valid_instances_returns_200(ctx: Context) -> str:
    """All generated studies (plain, multi-frame, RLE, UTF-8, Latin-1) are stored with 200."""
    codes = []
    for key, up in ctx.uploads.items():
        ensure(not up.error, f"{key}: {up.error}")
        ensure(up.status == 200, f"{key}: expected 200, got HTTP {up.status}: {up.body[:80]!r}")
        codes.append(f"{key}={up.status}")
    return ", ".join(codes)


@check(
    "stow.referenced-sop-sequence",
    "PS3.18 10.5.3.2",
    "Response lists every stored instance in ReferencedSOPSequence with a RetrieveURL",
)
def store_response_references_all_instances(ctx: Context) -> str:
    """PS3.18 10.5.3.2: each stored instance appears in ReferencedSOPSequence (0008,1199)
    with ReferencedSOPClassUID, ReferencedSOPInstanceUID and RetrieveURL."""
    total = 0
    top_level_url = True
    for key, up in ctx.uploads.items():
        ensure(up.status in (200, 202), f"{key}: upload answered HTTP {up.status}")
        try:
            body = json_object_from_bytes(up.body)
        except ValueError as exc:
            fail(f"{key}: {exc}")
        items = _items(body, REFERENCED_SOP_SEQ)
        expected = {i.sop_uid for i in up.study.instances}
        got = {string(item, REF_SOP_INSTANCE) for item in items}
        ensure(expected <= got, f"{key}: ReferencedSOPSequence misses {len(expected - got)}")
        for item in items:
            ensure(has_tag(item, REF_SOP_CLASS), f"{key}: item without ReferencedSOPClassUID")
            ensure(string(item, RETRIEVE_URL), f"{key}: item without RetrieveURL (0008,1190)")
        top_level_url = top_level_url and bool(string(body, RETRIEVE_URL))
        total += len(items)
    return f"{total} instances referenced" + ("" if top_level_url else "; no study RetrieveURL")


def json_object_from_bytes(content: bytes) -> dict[str, object]:
    """Parse a recorded STOW-RS answer (the setup upload) as a DICOM JSON object."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON response: {exc}; {content[:60]!r}") from None
    if not isinstance(body, dict):
        raise ValueError(f"response is a {type(body).__name__}, not a DICOM JSON object")
    return body


@check(
    "stow.partial-failure-202",
    "PS3.18 10.5.3.1",
    "Valid instance + non-DICOM part: 202 Accepted, FailedSOPSequence with FailureReason",
)
def store_with_non_dicom_part_returns_202(ctx: Context) -> str:
    """PS3.18 10.5.3.1: 202 when some instances were stored and others failed; the
    failures are listed in FailedSOPSequence (0008,1198) with FailureReason (0008,1197)."""
    good = ctx.data.scratch_instance()
    body, ctype = encode_multipart([good.data, b"this is not a DICOM Part 10 file"])
    resp = ctx.client.post("studies", body, ctype)
    ensure(resp.status_code != 200, "200 OK although one part was not DICOM")
    expect_status(resp, 202)
    answer = json_object(resp)
    reasons = _failure_reasons(answer)
    ensure(reasons, "202 without FailedSOPSequence (0008,1198)")
    ensure("absent" not in reasons, "FailedSOPSequence item without FailureReason (0008,1197)")
    stored = {string(i, REF_SOP_INSTANCE) for i in _items(answer, REFERENCED_SOP_SEQ)}
    ensure(good.sop_uid in stored, "the valid instance is not in ReferencedSOPSequence")
    return f"202, FailureReason {', '.join(reasons)}"


@check(
    "stow.missing-sop-instance-uid",
    "PS3.18 10.5.3.1",
    "Instance without SOPInstanceUID is rejected (409 + FailedSOPSequence)",
)
def store_without_sop_instance_uid_is_rejected(ctx: Context) -> str:
    """PS3.18 10.5.3.1: 409 Conflict when no instance could be stored; the response lists
    the failure with a FailureReason."""
    inst = ctx.data.scratch_instance()
    ds = parse(inst.data)
    del ds.SOPInstanceUID
    body, ctype = encode_multipart([to_bytes(ds)])
    resp = ctx.client.post("studies", body, ctype)
    ensure(
        resp.status_code not in (200, 202),
        f"instance without SOPInstanceUID stored: {describe(resp)}",
    )
    expect_status(resp, 409)
    reasons = _failure_reasons(json_object(resp))
    ensure(reasons and "absent" not in reasons, "409 without FailedSOPSequence/FailureReason")
    return f"409, FailureReason {', '.join(reasons)}"


@check(
    "stow.study-uid-mismatch",
    "PS3.18 10.5.3.1",
    "POST /studies/{other}: instance of another study is rejected with 409 + FailureReason",
)
def store_into_other_study_is_rejected(ctx: Context) -> str:
    """PS3.18 10.5.1.1: with a target study, instances whose StudyInstanceUID differs
    shall not be stored; 409 with FailedSOPSequence/FailureReason."""
    inst = ctx.data.scratch_instance()
    other = ctx.data.uid(8)
    body, ctype = encode_multipart([inst.data])
    resp = ctx.client.post(f"studies/{other}", body, ctype)
    if resp.status_code in (404, 405, 501):
        unsupported(f"POST /studies/{{uid}} not available: {describe(resp)}")
    ensure(not _is_stored(ctx, inst), f"mismatching instance was stored ({describe(resp)})")
    expect_status(resp, 409)
    answer = json_object(resp)
    failed = _items(answer, FAILED_SOP_SEQ)
    ensure(failed, "409 without FailedSOPSequence (0008,1198)")
    uids = {string(item, REF_SOP_INSTANCE) for item in failed}
    ensure(inst.sop_uid in uids, "FailedSOPSequence does not reference the rejected instance")
    reasons = _failure_reasons(answer)
    ensure("absent" not in reasons, "FailedSOPSequence item without FailureReason")
    return f"409, FailureReason {', '.join(reasons)}"


@check("stow.unsupported-media-type", "PS3.18 10.5.3.1", "Unsupported Content-Type gives 415")
def store_with_unsupported_content_type_returns_415(ctx: Context) -> str:
    """PS3.18 10.5.3.1: 415 Unsupported Media Type for a payload type the server does
    not support."""
    resp = ctx.client.post("studies", b"hello", "text/plain")
    expect_status(resp, 415)
    return "415"


@check(
    "stow.single-part",
    "PS3.18 10.5.1.2",
    "Single-part application/dicom request body is stored (optional)",
)
def store_single_part_application_dicom(ctx: Context) -> str:
    """A single instance posted as a bare ``application/dicom`` body (not multipart)."""
    inst = ctx.data.scratch_instance()
    resp = ctx.client.post("studies", inst.data, "application/dicom")
    if resp.status_code in (400, 404, 405, 415, 501):
        unsupported(describe(resp))
    expect_status(resp, 200)
    ensure(_is_stored(ctx, inst), "200 but the instance cannot be found with QIDO-RS")
    return "200, instance searchable"
