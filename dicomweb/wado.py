"""WADO-RS (PS3.18 10.4): instances and metadata, served from what ingest precomputed (stored
files as they are, stored DICOM JSON), DELETE, and what the frame and bulk data routes
(`wado_frames`) share with them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb import (
    archive,
    compression,
    http_cache,
    instance_stream,
    multipart,
    sources,
    transcoding,
)
from dicomweb.dicomjson import ROOT_TOKEN_BYTES
from dicomweb.errors import NotAcceptable, NotFound, ServiceUnavailable
from dicomweb.negotiation import (
    MediaRange,
    Representation,
    accepts_json,
    choose_instance_representation,
    parse_accept,
)
from dicomweb.pixels.budget import BudgetBusy, BudgetExceeded
from dicomweb.pixels.frames import PixelLimits
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
    ranges = accept_ranges(request)
    if ranges and ranges[0].media_type == archive.MEDIA_TYPE:
        return await retrieve_archive(store, study, series, sop)
    locations = await run_in_threadpool(store.locate, study, series, sop)
    chosen: dict[str, Representation] = {}  # by stored syntax: a series has one or two
    for loc in locations:
        if (stored := loc.transfer_syntax_uid) not in chosen:
            chosen[stored] = choose_instance_representation(
                ranges, stored,
                can_produce=lambda ts, src=stored: transcoding.can_transcode(src, ts))
    representations = [chosen[loc.transfer_syntax_uid] for loc in locations]
    single = not any(r.multipart for r in representations)
    if single and len(locations) > 1:
        raise NotAcceptable(
            f"{len(locations)} instances cannot be sent as one application/dicom body; accept "
            'multipart/related; type="application/dicom"'
        )
    # Everything the body needs is opened or produced now, before the status line.
    limits = PixelLimits.of(request.app.state)
    bodies = await run_in_threadpool(instance_bodies, store, locations, representations, limits)
    if single:
        segments = [instance_stream.file_segment(bodies[0])]
        media_type = f"application/dicom; transfer-syntax={representations[0].transfer_syntax}"
    else:
        boundary = multipart.new_boundary()
        syntaxes = {r.transfer_syntax for r in representations}
        media_type = multipart.multipart_content_type(
            "application/dicom", boundary, syntaxes.pop() if len(syntaxes) == 1 else None
        )
        segments = instance_segments(bodies, locations, representations, boundary,
                                     base_url(request))
    return StreamingResponse(
        instance_stream.stream(segments),
        media_type=media_type,
        headers={"Content-Length": str(instance_stream.content_length(segments))},
    )


async def retrieve_archive(
    store: Store, study: str, series: str | None, sop: str | None
) -> Response:
    """The instances as one streamed ZIP file, stored bytes as they are; every file is
    opened before the status line, so a DELETE meanwhile cannot cut the archive."""
    rows = await run_in_threadpool(store.archive_rows, study, series, sop)
    files = await run_in_threadpool(archive.open_files, store.blobs, rows)
    name = archive.clean(series or study, "dicom")
    return StreamingResponse(
        archive.stream_zip(files, rows),
        media_type=archive.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"',
                 "Cache-Control": http_cache.REVALIDATE},
    )


def instance_bodies(
    store: Store, locations: list[InstanceLocation], representations: list[Representation],
    limits: PixelLimits,
) -> list[BinaryIO]:
    """Each instance's body, open: the stored file, or its transcoding produced whole."""
    bodies: list[BinaryIO] = []
    try:
        for loc, rep in zip(locations, representations, strict=True):
            fp = sources.open_blob(store, loc)
            if rep.transfer_syntax != loc.transfer_syntax_uid:
                with fp:
                    fp = sources.spool(transcoded(fp, loc, rep.transfer_syntax, limits, store))
            bodies.append(fp)
    except BaseException:
        for fp in bodies:
            fp.close()
        raise
    return bodies


def instance_segments(
    bodies: list[BinaryIO],
    locations: list[InstanceLocation],
    representations: list[Representation],
    boundary: str,
    base: str,
) -> list[instance_stream.Segment]:
    """The multipart body: each part's headers and its open body, the CRLF that ends a part
    sent with what follows it (the next part's headers, or the closing delimiter)."""
    segments: list[instance_stream.Segment] = []
    ending = b""
    for body, loc, rep in zip(bodies, locations, representations, strict=True):
        head = multipart.part_header(
            boundary,
            {
                "Content-Type": f"application/dicom; transfer-syntax={rep.transfer_syntax}",
                "Content-Location": instance_url(base, loc),
            },
        )
        segments += [instance_stream.Segment(ending + head), instance_stream.file_segment(body)]
        ending = b"\r\n"
    segments.append(instance_stream.Segment(ending + multipart.closing(boundary)))
    return segments


def transcoded(fp: BinaryIO, loc: InstanceLocation, transfer_syntax: str,
               limits: PixelLimits, store: Store) -> bytes:
    size = os.fstat(fp.fileno()).st_size
    cost = transcoding.transcode_cost(size, metadata_of(store, loc))
    with transcode_errors(), limits.budget.reserve(cost, "transcoding this instance"):
        return transcoding.transcode_instance(fp.read(), transfer_syntax,
                                              limits.max_decoded_bytes)


@contextmanager
def transcode_errors() -> Iterator[None]:
    """The pixel memory budget as HTTP: busy is 503, never enough is 406."""
    try:
        yield
    except BudgetBusy as exc:
        raise ServiceUnavailable(str(exc), retry_after_s=exc.retry_after_s) from None
    except BudgetExceeded as exc:
        raise NotAcceptable(str(exc)) from None


def instance_url(base: str, loc: InstanceLocation) -> str:
    return (
        f"{base}/studies/{loc.study_instance_uid}/series/{loc.series_instance_uid}"
        f"/instances/{loc.sop_instance_uid}"
    )


# --- metadata ---------------------------------------------------------------------------


async def retrieve_metadata(request: Request) -> Response:
    """A concatenation of stored DICOM JSON rows; only the URI root is filled in.

    The answer is kept (compressed when the client accepts it) under its ETag, made of the
    blob keys of its instances: a repeated request costs one query of those keys, and a
    client that has it gets a 304."""
    if not accepts_json(accept_ranges(request)):
        raise NotAcceptable(f"metadata is available as {JSON} only")
    study, series, sop = path_uids(request)
    store = store_of(request)
    base = base_url(request)
    encoding = compression.choose_encoding(request.headers.get("accept-encoding"))
    # A series' or an instance's keys are one indexed query of at most a series' rows, run on
    # the event loop: through a worker thread, concurrent metadata requests made the threads
    # and the loop fight over the GIL and served fewer per second with six clients than one.
    keys = (store.blob_keys(study, series, sop) if series is not None
            else await run_in_threadpool(store.blob_keys, study, series, sop))
    if not keys:
        raise NotFound(f"no instance matches study {study}" + (f", series {series}" if series
                       else "") + (f", instance {sop}" if sop else ""))
    etag = http_cache.etag_of(["metadata", base, encoding or "identity", *keys])
    if http_cache.matches(request, etag):
        return http_cache.not_modified(etag, compression.VARY)
    bodies: http_cache.BodyCache = request.app.state.bodies
    cached = bodies.get((etag,))
    if cached is None:
        cached = await run_in_threadpool(metadata_body, store, study, series, sop, base, encoding)
        bodies.put((etag,), cached)
    body, content_encoding = cached
    headers = {**http_cache.validator_headers(etag), "Vary": compression.VARY}
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    return Response(body, media_type=JSON, headers=headers)


def metadata_body(
    store: Store, study: str, series: str | None, sop: str | None, base: str,
    encoding: str | None,
) -> http_cache.Cached:
    rows = store.metadata_rows(study, series, sop)
    body = (b"[" + b",".join(rows) + b"]").replace(ROOT_TOKEN_BYTES, json_text(base))
    if encoding and len(body) >= compression.MIN_COMPRESS_BYTES:
        return compression.compress(body, encoding, thorough=True), encoding
    return body, None


def metadata_of(store: Store, loc: InstanceLocation) -> bytes:
    return loc.metadata_json or store.metadata_rows(
        loc.study_instance_uid, loc.series_instance_uid, loc.sop_instance_uid
    )[0]


# --- delete -----------------------------------------------------------------------------


async def delete_resource(request: Request) -> Response:
    """Not in PS3.18; as Orthanc and dcm4chee offer: index rows first, then blobs."""
    study, series, sop = path_uids(request)
    count = await run_in_threadpool(store_of(request).delete, study, series, sop)
    request.app.state.locations.drop_matching(study, series, sop)
    return Response(orjson.dumps({"deleted_instances": count}), media_type="application/json",
                    headers={"Cache-Control": http_cache.NO_STORE})
