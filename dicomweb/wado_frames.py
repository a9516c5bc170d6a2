"""WADO-RS frames and bulk data (PS3.18 10.4): byte ranges of stored files, found in the
index (or, for hot instances, in memory), sent as stored or converted."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb import http_cache, multipart, sources, transcoding
from dicomweb.errors import BadRequest, NotFound
from dicomweb.locations import (
    INLINE_READ_BYTES,
    LocationCache,
    direct_representation,
    hot_location,
    inline_size,
)
from dicomweb.locations import read_frames as hot_read_frames
from dicomweb.negotiation import (
    DEFLATED,
    EXPLICIT_VR_BIG_ENDIAN,
    NATIVE_SYNTAXES,
    MediaRange,
    Representation,
    choose_frame_representation,
)
from dicomweb.pixels.frames import PixelLimits
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.wado import (
    accept_ranges,
    base_url,
    instance_url,
    metadata_of,
    path_uids,
    store_of,
    transcode_errors,
)

# --- frames -----------------------------------------------------------------------------


def parse_frame_list(text: str, max_count: int | None = None) -> list[int]:
    items = [item for item in text.split(",") if item.strip()]
    if max_count is not None and len(items) > max_count:
        raise BadRequest(f"a frame list holds at most {max_count} frame numbers "
                         f"(DICOMWEB_MAX_FRAMES_PER_REQUEST), this one {len(items)}; ask for "
                         "the frames in several requests", parameter="frames")
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise BadRequest(f"frame list {text[:200]!r} must be comma-separated integers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest(f"frame numbers start at 1: {text[:200]!r}")
    return numbers


async def retrieve_frames(request: Request) -> Response:
    study, series, sop = path_uids(request)
    settings = request.app.state.settings
    numbers = parse_frame_list(request.path_params["frames"], settings.max_frames_per_request)
    cache: LocationCache = request.app.state.locations
    if (response := await cached_frames(request, cache, (study, series, sop), numbers)):
        return response
    ranges = accept_ranges(request)
    store = store_of(request)
    frames, rep, loc = await run_in_threadpool(
        locate_and_read_frames, store, study, series, sop, numbers, ranges,
        PixelLimits.of(request.app.state),
    )
    blob_path = store.blobs.path(loc.blob_key)
    entry = hot_location(blob_path, loc.transfer_syntax_uid, loc.frames)
    if entry is not None:
        cache.put((study, series, sop), entry)
    etag = frames_etag(str(blob_path), numbers, rep)
    if http_cache.matches(request, etag):
        return http_cache.not_modified(etag, "Accept")
    url = instance_url(base_url(request), loc)
    return validated(frames_response(frames, rep, [f"{url}/frames/{n}" for n in numbers]), etag)


async def cached_frames(
    request: Request, cache: LocationCache, key: tuple[str, str, str], numbers: list[int]
) -> Response | None:
    """Frames of a hot instance sent as stored, without the index, read before the status
    line; None: the full path answers."""
    entry = cache.get(key)
    if entry is None or "accept" in request.query_params:
        return None
    rep = direct_representation(request.headers.get("accept"), entry.transfer_syntax_uid)
    if rep is None or max(numbers) > len(entry.frames):
        return None  # a conversion, or the full path says which frame is missing
    etag = frames_etag(str(entry.blob_path), numbers, rep)
    if http_cache.matches(request, etag) and entry.blob_path.exists():
        return http_cache.not_modified(etag, "Accept")
    if inline_size(entry, numbers) <= INLINE_READ_BYTES:
        frames = hot_read_frames(entry, numbers)
    else:
        frames = await run_in_threadpool(hot_read_frames, entry, numbers)
    if frames is None:
        cache.drop(key)  # deleted or replaced since: ask the index
        return None
    study, series, sop = key
    url = f"{base_url(request)}/studies/{study}/series/{series}/instances/{sop}"
    locations = [f"{url}/frames/{n}" for n in numbers]
    return validated(frames_body(frames, rep, locations), etag)


def frames_body(frames: list[bytes], rep: Representation, locations: list[str]) -> Response:
    """Frames read already, in one body (small: at most INLINE_READ_BYTES or one thread's
    read), not streamed part by part."""
    part_type = f"{rep.media_type}; transfer-syntax={rep.transfer_syntax}"
    if not rep.multipart and len(frames) == 1:
        return Response(frames[0], media_type=part_type)
    boundary = multipart.new_boundary()
    body = multipart.encode_parts(
        boundary,
        (({"Content-Type": part_type, "Content-Location": location}, frame)
         for frame, location in zip(frames, locations, strict=True)),
    )
    return Response(body, media_type=multipart.multipart_content_type(rep.media_type, boundary))


def frames_etag(blob: str, numbers: list[int], rep: Representation) -> str:
    numbers_text = ",".join(map(str, numbers))
    return http_cache.etag_of(
        ["frames", blob, numbers_text, rep.media_type, rep.transfer_syntax, str(rep.multipart)]
    )


def validated(response: Response, etag: str, vary: str = "Accept") -> Response:
    response.headers.update({**http_cache.validator_headers(etag), "Vary": vary})
    return response


def locate_and_read_frames(
    store: Store, study: str, series: str, sop: str, numbers: list[int],
    ranges: list[MediaRange], limits: PixelLimits,
) -> tuple[Iterable[bytes], Representation, InstanceLocation]:
    """One thread hop per frame request: index row, negotiation, the file opened."""
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
    return read_frames(store, loc, numbers, rep.transfer_syntax, limits), rep, loc


def frames_response(
    frames: Iterable[bytes], rep: Representation, locations: list[str]
) -> Response:
    """One frame as itself, or parts streamed a frame at a time as they are read."""
    part_type = f"{rep.media_type}; transfer-syntax={rep.transfer_syntax}"
    if not rep.multipart and len(locations) == 1:
        return Response(b"".join(frames), media_type=part_type)
    boundary = multipart.new_boundary()

    def parts() -> Iterator[bytes]:
        for frame, location in zip(frames, locations, strict=True):
            headers = {"Content-Type": part_type, "Content-Location": location}
            yield multipart.part_header(boundary, headers) + frame + b"\r\n"
        yield multipart.closing(boundary)

    return StreamingResponse(
        parts(), media_type=multipart.multipart_content_type(rep.media_type, boundary)
    )


def read_frames(
    store: Store, loc: InstanceLocation, numbers: list[int], syntax: str, limits: PixelLimits
) -> Iterable[bytes]:
    """The frames in `syntax`: streamed from the open file when they are sent as stored,
    else converted, all of them, before the status line (a failure is a 406, not a cut)."""
    stored = loc.transfer_syntax_uid
    ranges = loc.frames
    direct = syntax == stored or (stored in NATIVE_SYNTAXES and syntax in NATIVE_SYNTAXES)
    fp = sources.open_blob(store, loc)
    if ranges is not None and direct:
        desc = None
        if stored == EXPLICIT_VR_BIG_ENDIAN:
            desc = transcoding.description_of(metadata_of(store, loc))
        return sources.stream_frames(fp, loc, numbers, desc)
    with fp:
        desc = transcoding.description_of(metadata_of(store, loc))
        if ranges is not None:
            # A conversion: decode (and re-encode) the indexed frame bytes, no file parsing.
            cost = transcoding.frames_cost(len(set(numbers)), desc)
            with transcode_errors(), limits.budget.reserve(cost, "converting these frames"):
                frames = [sources.read_ranges(fp, ranges[n - 1]) for n in numbers]
                return transcoding.convert_frames(frames, numbers, stored, syntax, desc,
                                                  limits.max_decoded_bytes)
        size = os.fstat(fp.fileno()).st_size
        cost = transcoding.transcode_cost(size, metadata_of(store, loc))
        with transcode_errors(), limits.budget.reserve(cost, "decoding these frames"):
            return transcoding.frames_from_file(fp.read(), numbers, syntax,
                                                limits.max_decoded_bytes)


# --- bulk data --------------------------------------------------------------------------


async def retrieve_bulkdata(request: Request) -> Response:
    study, series, sop = path_uids(request)
    path = request.path_params["path"].strip("/").upper()
    store = store_of(request)
    loc = (
        await run_in_threadpool(store.locate, study, series, sop, with_frames=True,
                                with_bulk=True, with_metadata=True)
    )[0]
    etag = http_cache.etag_of(["bulkdata", loc.blob_key, path, request.headers.get("accept", ""),
                               ",".join(request.query_params.getlist("accept"))])
    if http_cache.matches(request, etag):
        return http_cache.not_modified(etag, "Accept")
    return validated(await bulkdata_response(request, store, loc, path), etag)


async def bulkdata_response(
    request: Request, store: Store, loc: InstanceLocation, path: str
) -> Response:
    ranges = accept_ranges(request)
    single = (
        bool(ranges)
        and not ranges[0].multipart
        and ranges[0].matches("application/octet-stream")
    )
    url = str(request.url)
    bulk = orjson.loads(loc.bulk_json) if loc.bulk_json else {}
    native = loc.transfer_syntax_uid in NATIVE_SYNTAXES
    if path in ("7FE00010", "7FE00008", "7FE00009") and loc.number_of_frames and not (
            path in bulk and native):
        # Encapsulated pixel data: its frames, each with its own media type.
        numbers = list(range(1, loc.number_of_frames + 1))
        rep = choose_frame_representation(
            [MediaRange("multipart/related", {"type": "application/octet-stream"}, ["*"])],
            loc.transfer_syntax_uid,
            can_produce=lambda ts: False,
        )
        frames = await run_in_threadpool(read_frames, store, loc, numbers, rep.transfer_syntax,
                                         PixelLimits.of(request.app.state))
        return frames_response(frames, rep, [url] * len(numbers))
    chunks = await run_in_threadpool(bulk_chunks, store, loc, path, bulk,
                                     PixelLimits.of(request.app.state))
    return bulk_response(chunks, single, url)


def bulk_chunks(store: Store, loc: InstanceLocation, path: str, bulk: dict,
                limits: PixelLimits) -> Iterator[bytes]:
    """The element's value streamed from the open file (in little endian), found in the
    bulk index or by parsing the file without reading its large values."""
    big_endian = loc.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
    fp = sources.open_blob(store, loc)
    if path in bulk:
        offset, length, vr = bulk[path]
    elif loc.transfer_syntax_uid != DEFLATED:
        found = sources.locate_element(store.blobs.path(loc.blob_key), path)
        if found is None:
            fp.close()
            raise NotFound(f"instance {loc.sop_instance_uid} has no bulk data at {path}")
        offset, length, big_endian, vr = found
    else:
        with fp:
            return iter([deflated_bulk(fp, loc, path, limits)])
    width = 0
    if big_endian:
        width = transcoding.SWAP_WIDTH.get(vr, 0)
        if path == "7FE00010":  # samples swap by Bits Allocated (PS3.5 8.1.1, 8.2)
            bits = transcoding.description_of(loc.metadata_json).bits_allocated
            width = bits // 8 if bits > 8 else width
    return sources.range_chunks(fp, offset, length, width)


def deflated_bulk(fp: BinaryIO, loc: InstanceLocation, path: str, limits: PixelLimits) -> bytes:
    """A deflated file is inflated to be read: in memory, within the pixel budget."""
    size = os.fstat(fp.fileno()).st_size
    cost = min(size * transcoding.TRANSCODE_FILE_FACTOR * 4, limits.budget.capacity)
    with transcode_errors(), limits.budget.reserve(cost, "reading this deflated instance"):
        data = transcoding.bulk_from_file(fp.read(), path)
    if data is None:
        raise NotFound(f"instance {loc.sop_instance_uid} has no bulk data at {path}")
    return data


def bulk_response(chunks: Iterator[bytes], single: bool, url: str) -> Response:
    part_type = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    if single:
        return StreamingResponse(chunks, media_type=part_type)
    boundary = multipart.new_boundary()

    def parts() -> Iterator[bytes]:
        yield multipart.part_header(boundary, {"Content-Type": part_type,
                                               "Content-Location": url})
        yield from chunks
        yield b"\r\n" + multipart.closing(boundary)

    return StreamingResponse(parts(), media_type=multipart.multipart_content_type(
        "application/octet-stream", boundary))
