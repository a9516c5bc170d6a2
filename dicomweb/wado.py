"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data, served from what ingest
precomputed: stored files as they are, stored DICOM JSON, frame and bulk byte ranges."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb import multipart, transcoding
from dicomweb.dicomjson import ROOT_TOKEN_BYTES
from dicomweb.errors import BadRequest, NotAcceptable, NotFound
from dicomweb.negotiation import (
    EXPLICIT_VR_BIG_ENDIAN,
    NATIVE_SYNTAXES,
    MediaRange,
    Representation,
    accepts_json,
    choose_frame_representation,
    choose_instance_representation,
    parse_accept,
)
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.urls import json_text, service_base_url

JSON = "application/dicom+json"


def accept_ranges(request: Request) -> list[MediaRange]:
    """PS3.18 8.3.3.1: the `accept` query parameter, when present, overrides the header."""
    if values := request.query_params.getlist("accept"):
        return parse_accept(",".join(values))
    return parse_accept(request.headers.get("accept"))


def store_of(request: Request) -> Store:
    return request.app.state.store


def path_uids(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    return params["study"], params.get("series"), params.get("instance")


def base_url(request: Request) -> str:
    return service_base_url(request, request.app.state.settings)


# --- instances ------------------------------------------------------------------------


async def retrieve_instances(request: Request) -> Response:
    """Study, series or instance as multipart/related; type="application/dicom"."""
    study, series, sop = path_uids(request)
    store = store_of(request)
    locations = await run_in_threadpool(store.locate, study, series, sop)
    ranges = accept_ranges(request)
    representations = [
        choose_instance_representation(
            ranges,
            loc.transfer_syntax_uid,
            can_produce=lambda ts, src=loc.transfer_syntax_uid: transcoding.can_transcode(
                src, ts
            ),
        )
        for loc in locations
    ]
    single = not any(r.multipart for r in representations)
    if single and len(locations) > 1:
        raise NotAcceptable(
            f"{len(locations)} instances cannot be sent as one application/dicom body; accept "
            'multipart/related; type="application/dicom"'
        )
    if single:
        loc, rep = locations[0], representations[0]
        if rep.transfer_syntax == loc.transfer_syntax_uid:
            return StreamingResponse(
                store.blobs.iter_file(loc.blob_key),
                media_type=f"application/dicom; transfer-syntax={rep.transfer_syntax}",
            )
        body = await run_in_threadpool(transcoded, store, loc, rep.transfer_syntax)
        return Response(
            body, media_type=f"application/dicom; transfer-syntax={rep.transfer_syntax}"
        )
    boundary = multipart.new_boundary()
    syntaxes = {r.transfer_syntax for r in representations}
    content_type = multipart.multipart_content_type(
        "application/dicom", boundary, syntaxes.pop() if len(syntaxes) == 1 else None
    )
    base = base_url(request)
    return StreamingResponse(
        instance_parts(store, locations, representations, boundary, base),
        media_type=content_type,
    )


#: Small instances are sent in buffers of about this size: one thread hop per buffer, not
#: three per instance.
PART_BUFFER_BYTES = 1 << 20


def instance_parts(
    store: Store,
    locations: list[InstanceLocation],
    representations: list[Representation],
    boundary: str,
    base: str,
) -> Iterator[bytes]:
    buffer = bytearray()
    for loc, rep in zip(locations, representations, strict=True):
        buffer += multipart.part_header(
            boundary,
            {
                "Content-Type": f"application/dicom; transfer-syntax={rep.transfer_syntax}",
                "Content-Location": instance_url(base, loc),
            },
        )
        if rep.transfer_syntax != loc.transfer_syntax_uid:
            buffer += transcoded(store, loc, rep.transfer_syntax)
        else:
            for chunk in store.blobs.iter_file(loc.blob_key, PART_BUFFER_BYTES):
                buffer += chunk
                if len(buffer) >= PART_BUFFER_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
        buffer += b"\r\n"
        if len(buffer) >= PART_BUFFER_BYTES:
            yield bytes(buffer)
            buffer.clear()
    buffer += multipart.closing(boundary)
    yield bytes(buffer)


def transcoded(store: Store, loc: InstanceLocation, transfer_syntax: str) -> bytes:
    data = store.blobs.path(loc.blob_key).read_bytes()
    return transcoding.transcode_instance(data, transfer_syntax)


def instance_url(base: str, loc: InstanceLocation) -> str:
    return (
        f"{base}/studies/{loc.study_instance_uid}/series/{loc.series_instance_uid}"
        f"/instances/{loc.sop_instance_uid}"
    )


# --- metadata ---------------------------------------------------------------------------


async def retrieve_metadata(request: Request) -> Response:
    """A concatenation of stored DICOM JSON rows; only the URI root is filled in."""
    if not accepts_json(accept_ranges(request)):
        raise NotAcceptable(f"metadata is available as {JSON} only")
    study, series, sop = path_uids(request)
    rows = await run_in_threadpool(store_of(request).metadata_rows, study, series, sop)
    body = b"[" + b",".join(rows) + b"]"
    body = body.replace(ROOT_TOKEN_BYTES, json_text(base_url(request)))
    return Response(body, media_type=JSON)


# --- frames -----------------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise BadRequest(f"frame list {text!r} must be comma-separated integers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest(f"frame numbers start at 1: {text!r}")
    return numbers


async def retrieve_frames(request: Request) -> Response:
    study, series, sop = path_uids(request)
    numbers = parse_frame_list(request.path_params["frames"])
    ranges = accept_ranges(request)
    frames, rep, loc = await run_in_threadpool(
        locate_and_read_frames, store_of(request), study, series, sop, numbers, ranges
    )
    url = instance_url(base_url(request), loc)
    return frames_response(frames, rep, [f"{url}/frames/{n}" for n in numbers])


def locate_and_read_frames(
    store: Store, study: str, series: str, sop: str, numbers: list[int],
    ranges: list[MediaRange],
) -> tuple[list[bytes], Representation, InstanceLocation]:
    """One thread hop per frame request: index row, negotiation, reads."""
    loc = store.locate(study, series, sop, with_frames=True)[0]
    count = loc.number_of_frames or 0
    if count == 0:
        raise NotFound(f"instance {sop} has no pixel data")
    if missing := [n for n in numbers if n > count]:
        raise NotFound(f"instance {sop} has {count} frame(s); no frame {missing[0]}")
    rep = choose_frame_representation(
        ranges,
        loc.transfer_syntax_uid,
        can_produce=lambda ts: transcoding.can_transcode_frames(loc.transfer_syntax_uid, ts),
    )
    return read_frames(store, loc, numbers, rep.transfer_syntax), rep, loc


def frames_response(frames: list[bytes], rep: Representation, locations: list[str]) -> Response:
    part_type = f"{rep.media_type}; transfer-syntax={rep.transfer_syntax}"
    if not rep.multipart and len(frames) == 1:
        return Response(frames[0], media_type=part_type)
    boundary = multipart.new_boundary()
    body = multipart.encode_parts(
        boundary,
        (
            ({"Content-Type": part_type, "Content-Location": location}, frame)
            for frame, location in zip(frames, locations, strict=True)
        ),
    )
    return Response(body, media_type=multipart.multipart_content_type(rep.media_type, boundary))


def read_frames(
    store: Store, loc: InstanceLocation, numbers: list[int], syntax: str
) -> list[bytes]:
    stored = loc.transfer_syntax_uid
    ranges = loc.frames
    direct = syntax == stored or (stored in NATIVE_SYNTAXES and syntax in NATIVE_SYNTAXES)
    if ranges is not None and direct:
        frames = [store.blobs.read_ranges(loc.blob_key, ranges[n - 1]) for n in numbers]
        if stored == EXPLICIT_VR_BIG_ENDIAN:
            bits = transcoding.bits_allocated_of(loc)
            frames = [transcoding.swap_to_little_endian(f, bits) for f in frames]
        return frames
    if ranges is not None:
        # A conversion: decode (and re-encode) the indexed frame bytes, no file parsing.
        frames = [store.blobs.read_ranges(loc.blob_key, ranges[n - 1]) for n in numbers]
        metadata = loc.metadata_json or store.metadata_rows(
            loc.study_instance_uid, loc.series_instance_uid, loc.sop_instance_uid
        )[0]
        desc = transcoding.description_of(metadata)
        return transcoding.convert_frames(frames, numbers, stored, syntax, desc)
    data = store.blobs.path(loc.blob_key).read_bytes()
    return transcoding.frames_from_file(data, numbers, syntax)


# --- bulk data --------------------------------------------------------------------------


async def retrieve_bulkdata(request: Request) -> Response:
    study, series, sop = path_uids(request)
    path = request.path_params["path"].strip("/").upper()
    store = store_of(request)
    loc = (
        await run_in_threadpool(store.locate, study, series, sop, with_frames=True, with_bulk=True)
    )[0]
    ranges = accept_ranges(request)
    single = (
        bool(ranges)
        and not ranges[0].multipart
        and ranges[0].matches("application/octet-stream")
    )
    bulk = orjson.loads(loc.bulk_json) if loc.bulk_json else {}
    if path in bulk and (path != "7FE00010" or loc.transfer_syntax_uid in NATIVE_SYNTAXES):
        offset, length, vr = bulk[path]
        data = await run_in_threadpool(store.blobs.read_ranges, loc.blob_key, [[offset, length]])
        if loc.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
            data = transcoding.swap_bulk_to_little_endian(data, vr)
        rep = Representation("application/octet-stream", "1.2.840.10008.1.2.1", not single)
        return frames_response([data], rep, [str(request.url)])
    if path in ("7FE00010", "7FE00008", "7FE00009") and loc.number_of_frames:
        # Encapsulated pixel data: its frames, each with its own media type.
        numbers = list(range(1, loc.number_of_frames + 1))
        rep = choose_frame_representation(
            [MediaRange("multipart/related", {"type": "application/octet-stream"}, ["*"])],
            loc.transfer_syntax_uid,
            can_produce=lambda ts: False,
        )
        frames = await run_in_threadpool(read_frames, store, loc, numbers, rep.transfer_syntax)
        url = str(request.url)
        return frames_response(frames, rep, [url] * len(frames))
    data = await run_in_threadpool(
        transcoding.bulk_from_file, store.blobs.path(loc.blob_key).read_bytes(), path
    )
    if data is None:
        raise NotFound(f"instance {sop} has no bulk data at {path}")
    rep = Representation("application/octet-stream", "1.2.840.10008.1.2.1", not single)
    return frames_response([data], rep, [str(request.url)])


# --- delete -----------------------------------------------------------------------------


async def delete_resource(request: Request) -> Response:
    """Not in PS3.18; as Orthanc and dcm4chee offer: index rows first, then blobs."""
    study, series, sop = path_uids(request)
    count = await run_in_threadpool(store_of(request).delete, study, series, sop)
    return Response(orjson.dumps({"deleted_instances": count}), media_type="application/json")
