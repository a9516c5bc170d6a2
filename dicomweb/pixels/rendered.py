"""Rendered resources (PS3.18 8.3.5, 10.4.1.1.3) and thumbnails (10.4.1.1.4) of an
instance, a frame, a series and a study.

At series and study level the server renders one *representative* image: the middle
instance (by Instance Number) of the series, or of the study's first image series (lowest
Series Number), and the middle frame of that instance.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb import http_cache
from dicomweb.errors import NotFound
from dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from dicomweb.rt import overlay
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.store.tables import Series

from .description import PixelDescription
from .frames import PixelLimits, decoded_frame, description_with_palette, pixel_errors
from .limits import sample_bytes
from .overlays import apply_overlays, frame_plane
from .params import RenderOptions, rendered_options
from .render import Viewport, apply_viewport, encode_image, render_array, render_frame
from .series_volumes import Volumes

THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 80

SERIES_TABLE = Series.__table__


def render_instance_frame(
    store: Store, loc: InstanceLocation, number: int, options: RenderOptions,
    volumes: Volumes | None, request: Request, descriptions: Descriptions | None = None,
    wait: bool = True,
) -> bytes:
    count = loc.number_of_frames or 0
    if count == 0:
        raise NotFound(f"instance {loc.sop_instance_uid} has no pixel data")
    if number > count:
        raise NotFound(f"instance {loc.sop_instance_uid} has {count} frame(s); no frame {number}")
    limits = PixelLimits.of(request.app.state)
    with pixel_errors():
        whole = descriptions.of(store, loc) if descriptions else description_with_palette(
            store, loc)
        desc = whole.for_frame(number - 1)
        cost = render_cost(desc, options)
        with limits.budget.reserve(cost, "rendering this image", wait):
            return render_decoded(store, loc, number, desc, options, limits, volumes, request)


#: Bytes per pixel and sample the rendering holds at most: the decoded sample, the float32
#: modality values, the cropped region and the per-plane copies the resampling makes.
SOURCE_BYTES_PER_SAMPLE = 20
#: Bytes per output pixel and channel: the resampled float32 plane, the stacked image, the
#: window output, the 8-bit image and the encoder's copy.
OUTPUT_BYTES_PER_CHANNEL = 24
OVERLAY_BYTES_PER_PIXEL = 64  # RGB float32 and uint8 images of the overlay drawing


def render_cost(desc: PixelDescription, options: RenderOptions) -> int:
    """The most memory rendering one frame takes, known before decoding it."""
    pixels = desc.rows * desc.columns
    source = pixels * desc.samples_per_pixel * (
        SOURCE_BYTES_PER_SAMPLE + sample_bytes(desc.bits_allocated))
    channels = 1 if desc.samples_per_pixel == 1 and desc.photometric_interpretation in (
        "MONOCHROME1", "MONOCHROME2") and options.overlays is None else 3
    viewport = options.viewport
    output = pixels if viewport is None else max(viewport.vw * viewport.vh, 1)
    if options.thumbnail and viewport is None:
        output = THUMBNAIL_SIZE * THUMBNAIL_SIZE
    overlays = pixels * OVERLAY_BYTES_PER_PIXEL if options.overlays is not None else 0
    return source + output * channels * OUTPUT_BYTES_PER_CHANNEL + overlays


def render_decoded(
    store: Store, loc: InstanceLocation, number: int, desc: PixelDescription,
    options: RenderOptions, limits: PixelLimits, volumes: Volumes | None,
    request: Request,
) -> bytes:
    pixels, photometric = decoded_frame(store, loc, number, desc, limits.max_decoded_bytes)
    viewport = options.viewport
    if options.thumbnail:
        rows, cols = pixels.shape[:2]
        if viewport is None:  # fit 128 x 128, never enlarged
            scale = min(1.0, THUMBNAIL_SIZE / max(rows, cols))
            viewport = Viewport(max(1, round(cols * scale)), max(1, round(rows * scale)))
    if options.overlays is not None:
        # Window to 8 bits, RGB, overlays, then the viewport (crop and resize).
        image = render_array(pixels, desc, window=options.window, photometric=photometric)
        rgb = apply_overlays(store, volumes or Volumes(store), request, overlay.rgb8(image),
                             frame_plane(desc, pixels.shape), desc.frame_of_reference_uid,
                             options.overlays)
        return encode_image(apply_viewport(rgb.astype(np.float32), viewport),
                            options.media_type, quality=options.quality)
    return render_frame(
        pixels,
        desc,
        media_type=options.media_type,
        window=options.window,
        viewport=viewport,
        quality=options.quality,
        bit_depth=options.bit_depth,
        photometric=photometric,
    )


def ordered_series(store: Store, study: str) -> list[str]:
    """Series of a study by Series Number (absent numbers last), then UID."""
    number = SERIES_TABLE.c.series_number
    query = (
        select(SERIES_TABLE.c.series_instance_uid)
        .where(SERIES_TABLE.c.study_instance_uid == study)
        .order_by(number.is_(None), number, SERIES_TABLE.c.series_instance_uid)
    )
    with store.engine.connect() as connection:
        return [row[0] for row in connection.execute(query).all()]


def representative(
    store: Store, study: str, series: str | None
) -> tuple[InstanceLocation, int]:
    """The middle instance of the (first image) series and its middle frame."""
    locations = store.locate(study, series)
    by_series: dict[str, list[InstanceLocation]] = {}
    for loc in locations:
        if loc.number_of_frames:
            by_series.setdefault(loc.series_instance_uid, []).append(loc)
    if not by_series:
        raise NotFound("no image to render: " + (f"series {series}" if series else
                                                  f"study {study}") + " has no pixel data")
    order = [series] if series else [s for s in ordered_series(store, study) if s in by_series]
    images = by_series[order[0]] if order else next(iter(by_series.values()))
    chosen = images[len(images) // 2]
    full = store.locate(chosen.study_instance_uid, chosen.series_instance_uid,
                        chosen.sop_instance_uid, with_frames=True, with_metadata=True,
                        with_bulk=True)[0]
    return full, ((full.number_of_frames or 1) + 1) // 2


def render_target(store: Store, params: dict[str, str],
                  located: Located | None = None) -> tuple[InstanceLocation, int]:
    """The instance and frame number a rendered/thumbnail URL shows."""
    study, series, sop = params["study"], params.get("series"), params.get("instance")
    if sop is None:
        return representative(store, study, series)
    loc = located.fresh(store, (study, series or "", sop)) if located is not None else None
    if loc is None:
        loc = store.locate(study, series, sop, with_frames=True, with_metadata=True,
                           with_bulk=True)[0]
        if located is not None:
            located.put((study, series or "", sop), loc)
    number = 1
    if "frames" in params:
        from dicomweb.wado_frames import parse_frame_list

        number = parse_frame_list(params["frames"])[0]
    return loc, number


def render_resource(store: Store, params: dict[str, str], options: RenderOptions,
                    volumes: Volumes | None = None, request: Request | None = None) -> bytes:
    loc, number = render_target(store, params)
    return render_instance_frame(store, loc, number, options, volumes, request)


def rendered_etag(loc: InstanceLocation, number: int, options: RenderOptions) -> str | None:
    """The image depends on the instance's stored version, the frame and the options only;
    with overlays it depends on other instances too: no validator then."""
    if options.overlays is not None:
        return None
    return http_cache.etag_of(["rendered", loc.blob_key, str(number), repr(options)])


K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """The newest `max_entries` entries, oldest dropped first; safe to use from threads."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = Lock()

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)


#: Pixel descriptions kept by the rendered endpoints (a few kB each; palettes up to 384 kB).
DESCRIPTIONS = 1024


class Descriptions(Bounded[str, PixelDescription]):
    """Pixel descriptions by blob key: each stored version has its own key, so an entry never
    goes stale. Rebuilding one from the stored DICOM JSON took 0.2 ms of a 1.4 ms render."""

    def __init__(self, max_entries: int = DESCRIPTIONS) -> None:
        super().__init__(max_entries)

    def of(self, store: Store, loc: InstanceLocation) -> PixelDescription:
        found = self.get(loc.blob_key)
        if found is None:
            found = description_with_palette(store, loc)
            self.put(loc.blob_key, found)
        return found


#: Instance locations kept by the rendered endpoints (~4 kB each with their DICOM JSON).
LOCATIONS = 1024


class Located(Bounded[tuple[str, str, str], InstanceLocation]):
    """Where the instances rendered lately are, so that the next image of the same instance
    (another window, frame or size: a viewer scrolling) skips the index query. Like
    HotTargets, an entry whose blob file is gone (deleted, replaced) is stale: asked again."""

    def __init__(self, max_entries: int = LOCATIONS) -> None:
        super().__init__(max_entries)

    def fresh(self, store: Store, key: tuple[str, str, str]) -> InstanceLocation | None:
        found = self.get(key)
        if found is not None and not store.blobs.path(found.blob_key).exists():
            self.drop(key)
            return None
        return found


#: Instance-level rendered URLs seen lately → (ETag, blob file) of what they showed.
HOT_TARGETS = 4096


class HotTargets(Bounded[tuple[str, ...], tuple[str, str]]):
    """What an instance's rendered URL resolved to, so that a repeated request is answered
    from the body cache without a thread hop and an index query. Each stored version has its
    own blob file, removed when the instance is deleted or replaced: an entry whose file is
    gone is stale (the index is asked again)."""

    def __init__(self, max_entries: int = HOT_TARGETS) -> None:
        super().__init__(max_entries)


def hot_target_key(params: dict[str, str], options: RenderOptions) -> tuple[str, ...] | None:
    """Only an instance's URL: which instance represents a study or series can change."""
    if "instance" not in params:
        return None
    return (params["study"], params.get("series", ""), params["instance"],
            params.get("frames", ""), repr(options))


def located_and_rendered(
    store: Store, params: dict[str, str], options: RenderOptions, volumes: Volumes | None,
    request: Request, hot: HotTargets, key: tuple[str, ...] | None, descriptions: Descriptions,
    located: Located, wait: bool = True,
) -> tuple[str | None, bytes | None]:
    """(ETag, body) of a rendered URL, the body None when the client holds it (304): the
    lookup and the rendering in one thread hop, not two (a hop costs about 0.1 ms CPU);
    `wait` false on the event loop (`renders_inline`)."""
    loc, number = render_target(store, params, located)
    etag = rendered_etag(loc, number, options)
    if etag is None:
        return None, render_instance_frame(store, loc, number, options, volumes, request,
                                           descriptions, wait)
    if key is not None:
        hot.put(key, (etag, str(store.blobs.path(loc.blob_key))))
    if http_cache.matches(request, etag):
        return etag, None
    bodies: http_cache.BodyCache = request.app.state.bodies
    cached = bodies.get((etag,))
    if cached is None:
        cached = (render_instance_frame(store, loc, number, options, volumes, request,
                                        descriptions, wait), None)
        bodies.put((etag,), cached)
    return etag, cached[0]


#: Grayscale native frames of at most this many pixels are rendered on the event loop: the
#: rendering (read, 8-bit table, JPEG) takes ~0.5 ms, and handing it to a thread and back
#: cost the loop's thread 0.4-0.5 ms more CPU (GIL hand-offs, wake-ups), more than it saves.
INLINE_RENDER_PIXELS = 512 * 512
INLINE_SYNTAXES = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})


def renders_inline(store: Store, params: dict[str, str], options: RenderOptions,
                   located: Located, descriptions: Descriptions, limits: PixelLimits) -> bool:
    """Whether this image is cheap and everything it needs is in memory already: a located
    instance, its pixel description, a small native grayscale frame read as it is stored,
    JPEG at 8 bits without viewport or overlays, and pixel memory free now (never waited
    for on the loop)."""
    if "instance" not in params or options.overlays is not None or options.thumbnail or (
            options.viewport is not None or options.bit_depth != 8
            or options.media_type != "image/jpeg"):
        return False
    loc = located.fresh(store, (params["study"], params.get("series", ""), params["instance"]))
    desc = descriptions.get(loc.blob_key) if loc is not None else None
    if loc is None or desc is None or loc.frames is None:
        return False
    return (loc.transfer_syntax_uid in INLINE_SYNTAXES and desc.samples_per_pixel == 1
            and desc.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2")
            and desc.rows * desc.columns <= INLINE_RENDER_PIXELS
            and limits.budget.fits_now(render_cost(desc, options)))


def rendered_endpoint(store: Store, *, thumbnail: bool,
                      volumes: Volumes | None = None) -> Callable[[Request], Any]:
    hot = HotTargets()
    descriptions = Descriptions()
    located = Located()

    async def rendered(request: Request) -> Response:
        """Rendered images are kept under their ETag: OHIF asks for the same thumbnails
        and images again and again; a client holding one gets a 304."""
        options = rendered_options(request, thumbnail=thumbnail)
        params = dict(request.path_params)
        bodies: http_cache.BodyCache = request.app.state.bodies
        key = hot_target_key(params, options) if options.overlays is None else None
        if key is not None and (seen := hot.get(key)) is not None:
            etag, blob_path = seen
            if os.path.exists(blob_path):
                if http_cache.matches(request, etag):
                    return http_cache.not_modified(etag, "Accept")
                if (cached := bodies.get((etag,))) is not None:
                    headers = {**http_cache.validator_headers(etag), "Vary": "Accept"}
                    return Response(cached[0], media_type=options.media_type, headers=headers)
            else:
                hot.drop(key)
        app_store = request.app.state.store
        limits = PixelLimits.of(request.app.state)
        args = (app_store, params, options, volumes, request, hot, key, descriptions, located)
        if renders_inline(app_store, params, options, located, descriptions, limits):
            etag, body = located_and_rendered(*args, wait=False)
        else:
            etag, body = await run_in_threadpool(located_and_rendered, *args)
        if etag is None:  # overlays: no validator, never kept
            return Response(body, media_type=options.media_type)
        if body is None:
            return http_cache.not_modified(etag, "Accept")
        headers = {**http_cache.validator_headers(etag), "Vary": "Accept"}
        return Response(body, media_type=options.media_type, headers=headers)

    rendered.__name__ = "retrieve_thumbnail" if thumbnail else "retrieve_rendered"
    return rendered
