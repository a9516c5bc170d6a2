"""WADO-RS: the Retrieve Transaction (PS3.18 10.4) for DICOM, metadata, bulkdata, frames."""

from __future__ import annotations

import requests

from .client import (
    MULTIPART_DICOM,
    MULTIPART_OCTET,
    Part,
    describe,
    expect_status,
    json_list,
    media_params,
    media_type,
    multipart_parts,
)
from .context import Context, string
from .data import Instance, parse
from .registry import check, ensure, fail

EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"
PIXEL_DATA = "7FE00010"
ANY_TS = f"{MULTIPART_DICOM}; transfer-syntax=*"


def _retrieve_dicom(ctx: Context, path: str, accept: str = ANY_TS) -> list[Part]:
    resp = ctx.client.get(path, accept=accept)
    expect_status(resp, 200)
    parts = multipart_parts(resp)
    for part in parts:
        ctype = media_type(part.content_type) if part.content_type else "application/dicom"
        ensure(ctype == "application/dicom", f"part Content-Type {part.content_type!r}")
    return parts


def _compare(parts: list[Part], expected: list[Instance]) -> str:
    """Byte-compare retrieved parts with what was uploaded (order-independent)."""
    ensure(len(parts) == len(expected), f"{len(parts)} parts instead of {len(expected)}")
    by_uid = {i.sop_uid: i for i in expected}
    for part in parts:
        try:
            uid = str(parse(part.content).SOPInstanceUID)
        except Exception as exc:  # noqa: BLE001 - any parse error means a bad part
            fail(f"part is not a DICOM file: {exc}")
        ensure(uid in by_uid, f"unexpected instance {uid}")
        if part.content != by_uid[uid].data:
            detail = _why_different(part.content, by_uid[uid])
            fail(f"instance ...{uid[-8:]} not byte-identical: {detail}")
    return f"{len(parts)} instance(s) byte-identical"


def _why_different(got: bytes, inst: Instance) -> str:
    ds = parse(got)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "?"))
    if ts != str(inst.dataset.file_meta.TransferSyntaxUID):
        return f"transfer syntax changed to {ts}"
    return f"{len(got)} bytes instead of {len(inst.data)} (same transfer syntax)"


@check("wado.retrieve-instance", "PS3.18 10.4.1.1.1", "Retrieve instance, byte-identical")
def retrieve_instance_byte_identical(ctx: Context) -> str:
    inst = ctx.instance()
    return _compare(_retrieve_dicom(ctx, inst.path), [inst])


@check(
    "wado.retrieve-instance-default-ts",
    "PS3.18 8.7.3.5",
    "Retrieve instance without transfer-syntax gives Explicit VR Little Endian",
)
def retrieve_instance_default_transfer_syntax(ctx: Context) -> str:
    """PS3.18 8.7.3.5: the default transfer syntax of application/dicom is Explicit VR
    Little Endian; the part header may name it."""
    inst = ctx.instance()
    parts = _retrieve_dicom(ctx, inst.path, MULTIPART_DICOM)
    ensure(len(parts) == 1, f"{len(parts)} parts")
    ts = str(parse(parts[0].content).file_meta.get("TransferSyntaxUID", ""))
    ensure(ts == EXPLICIT_LE, f"transfer syntax {ts}")
    return f"{ts}, part Content-Type {parts[0].content_type or '-'}"


@check("wado.retrieve-series", "PS3.18 10.4.1.1.1", "Retrieve series, byte-identical")
def retrieve_series_byte_identical(ctx: Context) -> str:
    ct = ctx.data.ct
    ctx.require_uploaded()
    path = f"studies/{ct[0].study_uid}/series/{ct[0].series_uid}"
    return _compare(_retrieve_dicom(ctx, path), ct)


@check("wado.retrieve-study", "PS3.18 10.4.1.1.1", "Retrieve study, byte-identical")
def retrieve_study_byte_identical(ctx: Context) -> str:
    study = ctx.require_uploaded()
    return _compare(_retrieve_dicom(ctx, f"studies/{study.uid}"), study.instances)


@check(
    "wado.retrieve-compressed",
    "PS3.18 8.7.3.5",
    "RLE Lossless instance retrieved as stored with transfer-syntax=*",
)
def retrieve_compressed_instance_as_stored(ctx: Context) -> str:
    inst = ctx.data.compressed
    ctx.require_uploaded()
    parts = _retrieve_dicom(ctx, inst.path)
    ensure(len(parts) == 1, f"{len(parts)} parts")
    ts = str(parse(parts[0].content).file_meta.get("TransferSyntaxUID", ""))
    ensure(ts == RLE, f"transfer syntax {ts} instead of RLE Lossless")
    return _compare(parts, [inst])


@check("wado.retrieve-unknown-404", "PS3.18 10.4.3", "Unknown study/series/instance gives 404")
def retrieve_unknown_uids_404(ctx: Context) -> str:
    inst = ctx.instance()
    bogus = ctx.data.uid(7, 7, 7)
    paths = [
        f"studies/{bogus}",
        f"studies/{inst.study_uid}/series/{bogus}",
        f"studies/{inst.study_uid}/series/{inst.series_uid}/instances/{bogus}",
        f"studies/{bogus}/metadata",
    ]
    for path in paths:
        resp = ctx.client.get(path, accept=MULTIPART_DICOM if "metadata" not in path else None)
        ensure(resp.status_code == 404, f"{path.split('/', 2)[-1][-30:]}: {describe(resp)}")
    return f"{len(paths)} unknown resources → 404"


@check("wado.not-acceptable-406", "PS3.18 10.4.3", "Unsupported Accept gives 406")
def retrieve_unacceptable_media_type_406(ctx: Context) -> str:
    inst = ctx.instance()
    resp = ctx.client.get(inst.path, accept="application/x-conformance-nonsense")
    ensure(resp.status_code == 406, f"expected 406, got {describe(resp)}")
    return "406"


# -- metadata & bulkdata (PS3.18 10.4.1.1.2, 10.4.1.1.5) ---------------------------


def _metadata(ctx: Context, path: str) -> list[dict[str, object]]:
    resp = ctx.client.get(path + "/metadata", accept="application/dicom+json")
    expect_status(resp, 200)
    return json_list(resp)


def _check_metadata(ctx: Context, path: str, expected: list[Instance]) -> str:
    datasets = _metadata(ctx, path)
    got = {string(ds, "00080018") for ds in datasets}
    want = {i.sop_uid for i in expected}
    ensure(got == want, f"{len(got & want)}/{len(want)} instances in metadata")
    for ds in datasets:
        pixel = ds.get(PIXEL_DATA)
        ensure(isinstance(pixel, dict), "PixelData (7FE00010) absent from metadata")
        ensure("Value" not in pixel, "PixelData given as Value")  # type: ignore[operator]
        ensure(
            "BulkDataURI" in pixel or "InlineBinary" in pixel,  # type: ignore[operator]
            "PixelData without BulkDataURI",
        )
    uris = sum("BulkDataURI" in ds[PIXEL_DATA] for ds in datasets)  # type: ignore[operator]
    return f"{len(datasets)} dataset(s), {uris} PixelData BulkDataURI"


@check("wado.metadata-study", "PS3.18 10.4.1.1.2", "Study metadata")
def retrieve_study_metadata(ctx: Context) -> str:
    study = ctx.require_uploaded()
    return _check_metadata(ctx, f"studies/{study.uid}", study.instances)


@check("wado.metadata-series", "PS3.18 10.4.1.1.2", "Series metadata")
def retrieve_series_metadata(ctx: Context) -> str:
    ct = ctx.data.ct
    ctx.require_uploaded()
    return _check_metadata(ctx, f"studies/{ct[0].study_uid}/series/{ct[0].series_uid}", ct)


@check("wado.metadata-instance", "PS3.18 10.4.1.1.2", "Instance metadata")
def retrieve_instance_metadata(ctx: Context) -> str:
    inst = ctx.instance()
    return _check_metadata(ctx, inst.path, [inst])


@check(
    "wado.bulkdata-pixeldata",
    "PS3.18 10.4.1.1.5",
    "PixelData BulkDataURI returns the pixel bytes",
)
def retrieve_pixel_data_bulkdata(ctx: Context) -> str:
    inst = ctx.instance()
    (ds,) = _metadata(ctx, inst.path)[:1] or [{}]
    pixel = ds.get(PIXEL_DATA)
    ensure(isinstance(pixel, dict) and "BulkDataURI" in pixel, "no PixelData BulkDataURI")
    uri = str(pixel["BulkDataURI"])  # type: ignore[index]
    try:
        resp = ctx.client.get(ctx.client.resolve(uri), accept=MULTIPART_OCTET)
    except requests.ConnectionError as exc:
        fail(f"BulkDataURI {uri} unreachable ({type(exc).__name__}); wrong host/port?")
    expect_status(resp, 200)
    parts = multipart_parts(resp)
    ensure(len(parts) == 1, f"{len(parts)} parts")
    expected = inst.frame(1)
    ensure(parts[0].content == expected, f"{len(parts[0].content)} bytes, not the pixel data")
    return f"{len(expected)} bytes identical"


# -- frames (PS3.18 10.4.1.1.6, 8.7.3) -------------------------------------------------


def _frames(ctx: Context, numbers: str, accept: str) -> list[Part]:
    inst = ctx.data.multiframe
    ctx.require_uploaded()
    resp = ctx.client.get(f"{inst.path}/frames/{numbers}", accept=accept)
    expect_status(resp, 200)
    parts = multipart_parts(resp)
    wanted = [int(n) for n in numbers.split(",")]
    ensure(len(parts) == len(wanted), f"{len(parts)} parts for frames {numbers}")
    for number, part in zip(wanted, parts, strict=True):
        ensure(part.content == inst.frame(number), f"frame {number}: bytes differ")
    return parts


def _part_types(parts: list[Part]) -> str:
    return parts[0].content_type or "no part Content-Type"


@check("wado.frames-single", "PS3.18 10.4.1.1.6", "Retrieve one frame")
def retrieve_single_frame(ctx: Context) -> str:
    return _part_types(_frames(ctx, "2", MULTIPART_OCTET))


@check("wado.frames-list", "PS3.18 10.4.1.1.6", "Retrieve frame list 1,2")
def retrieve_frame_list(ctx: Context) -> str:
    return f"2 frames; {_part_types(_frames(ctx, '1,2', MULTIPART_OCTET))}"


@check(
    "wado.frames-ts-unquoted",
    "PS3.18 8.7.3.5",
    "Frames with unquoted type and transfer-syntax=* (as OHIF sends)",
)
def retrieve_frames_unquoted_transfer_syntax(ctx: Context) -> str:
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    return _part_types(_frames(ctx, "1", accept))


@check(
    "wado.frames-ts-quoted",
    "PS3.18 8.7.3.5",
    'Frames with quoted transfer-syntax="1.2.840.10008.1.2.1"',
)
def retrieve_frames_quoted_transfer_syntax(ctx: Context) -> str:
    accept = f'{MULTIPART_OCTET}; transfer-syntax="{EXPLICIT_LE}"'
    return _part_types(_frames(ctx, "1", accept))


@check(
    "wado.frames-ts-duplicated",
    "PS3.18 8.7.3.5",
    "Frames with a duplicated Accept media range list",
)
def retrieve_frames_duplicated_accept(ctx: Context) -> str:
    one = f"{MULTIPART_OCTET}; transfer-syntax={EXPLICIT_LE}"
    accept = f"{one}, {one}, multipart/related; type=application/octet-stream; transfer-syntax=*"
    return _part_types(_frames(ctx, "1", accept))


@check(
    "wado.frames-part-transfer-syntax",
    "PS3.18 8.7.3.5",
    "Frame part Content-Type carries the transfer-syntax parameter",
)
def retrieve_frame_part_carries_transfer_syntax(ctx: Context) -> str:
    parts = _frames(ctx, "1", f"{MULTIPART_OCTET}; transfer-syntax={EXPLICIT_LE}")
    ctype = parts[0].content_type
    ensure(media_type(ctype) == "application/octet-stream", f"part Content-Type {ctype!r}")
    ts = media_params(ctype).get("transfer-syntax")
    ensure(ts == EXPLICIT_LE, f"part Content-Type {ctype!r} lacks transfer-syntax={EXPLICIT_LE}")
    return ctype


@check("wado.frames-out-of-range", "PS3.18 10.4.3", "Frame number beyond NumberOfFrames fails")
def retrieve_frame_out_of_range(ctx: Context) -> str:
    inst = ctx.data.multiframe
    ctx.require_uploaded()
    resp = ctx.client.get(f"{inst.path}/frames/99", accept=MULTIPART_OCTET)
    ensure(resp.status_code in (400, 404), f"expected 400/404, got {describe(resp)}")
    return str(resp.status_code)
