"""HTTP routes of the pixel library, mounted by ``create_app`` under the DICOMweb root.

* Rendered resources (PS3.18 8.3.5, 10.4.1.1.3) and thumbnails (10.4.1.1.4) of an
  instance, a frame, a series and a study. At series and study level the server renders one
  *representative* image: the middle instance (by Instance Number) of the series, or of the
  study's first image series (lowest Series Number), and the middle frame of that instance.
* ``/studies/{study}/series/{series}/volume``: the geometry of the series as a volume.
* ``/studies/{study}/series/{series}/mpr/{plane}``: multi-planar reformats, from volumes
  decoded from the indexed frame bytes and kept in a :class:`VolumeCache`.
* RT overlays on rendered images and MPR images (``structures``, ``rois``, ``dose``,
  ``isodose``, ``fuse``, ``fuse_window``, ``registration``, ``opacity``; see
  :func:`parse_overlays`): drawn on the windowed 8-bit image turned RGB, before the viewport
  resize, in the thread pool.

Nothing here parses a DICOM file unless the frame byte ranges were not indexed (deflated
data, 1-bit frames); descriptions come from the stored DICOM JSON.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb import http_cache, transcoding
from dicomweb.errors import BadRequest, NotAcceptable, NotFound, Unprocessable
from dicomweb.negotiation import MediaRange, parse_accept
from dicomweb.rt import overlay
from dicomweb.rt import service as rts
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.store.tables import Instance, Series

from .codecs import NATIVE_TRANSFER_SYNTAXES, decode_frame_with_info, native_dtype
from .description import PixelDescription
from .errors import DecodeError, NotAVolume, PixelError, RenderError, UnsupportedTransferSyntax
from .mpr import PLANES, Reformat, ReformatError, reformat
from .mpr import sample as sample_volume
from .render import (
    Viewport,
    Window,
    apply_viewport,
    apply_window,
    default_window,
    encode_image,
    render_array,
    render_float_image,
    render_frame,
)
from .volume import SliceGeometry, Volume, VolumeCache, VolumeGeometry, build_volume_geometry

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")
MPR_TYPES = ("image/png", "image/jpeg", "application/octet-stream", "application/json")
THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 80
MAX_VIEWPORT = 8192
#: PS3.18 8.3.5.1.4 spells the functions in lower case with a hyphen; PS3.3 with "_".
WINDOW_FUNCTIONS = {"LINEAR": "LINEAR", "LINEAR_EXACT": "LINEAR_EXACT", "SIGMOID": "SIGMOID"}
SERIES_TABLE = Series.__table__
INSTANCE_TABLE = Instance.__table__
DECODE_WORKERS = max(2, min(8, os.cpu_count() or 2))


# --- query parameters ------------------------------------------------------------------


def accept_ranges(request: Request) -> list[MediaRange]:
    """PS3.18 8.3.3.1: the ``accept`` query parameter, when present, overrides the header."""
    if values := request.query_params.getlist("accept"):
        return parse_accept(",".join(values))
    return parse_accept(request.headers.get("accept"))


def choose_media_type(ranges: list[MediaRange], offered: tuple[str, ...]) -> str:
    """The first offered type (server preference) the best-quality range accepts."""
    for media in ranges:
        for media_type in offered:
            if media.matches(media_type):
                return media_type
    raise NotAcceptable(f"this resource is available as {', '.join(offered)} only")


def numbers(name: str, text: str, count: int | tuple[int, ...]) -> list[float]:
    counts = (count,) if isinstance(count, int) else count
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BadRequest(f"{name} must be {counts[0]} comma-separated numbers: {text!r}",
                         parameter=name) from None
    if len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{name} must be {' or '.join(map(str, counts))} comma-separated "
                         f"finite numbers: {text!r}", parameter=name)
    return values


def parse_window(text: str | None) -> Window | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4): linear, linear-exact, sigmoid."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise BadRequest(f"window must be center,width[,function]: {text!r}", parameter="window")
    center, width = numbers("window", ",".join(parts[:2]), 2)
    function = parts[2].upper().replace("-", "_") if len(parts) == 3 and parts[2] else "LINEAR"
    if function not in WINDOW_FUNCTIONS:
        raise BadRequest(f"window function must be linear, linear-exact or sigmoid: {text!r}",
                         parameter="window")
    try:
        return Window.of((center, width, function))
    except RenderError as exc:
        raise BadRequest(f"window {text!r}: {exc}", parameter="window") from None


def parse_viewport(text: str | None, *, full: bool = True) -> Viewport | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3); thumbnails take vw,vh only."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    allowed = (2, 4, 6) if full else (2,)
    if len(parts) not in allowed:
        form = "vw,vh[,sx,sy,sw,sh]" if full else "vw,vh"
        raise BadRequest(f"viewport must be {form}: {text!r}", parameter="viewport")
    values: list[float | None] = []
    for part in parts:
        if part == "" and len(values) >= 2:
            values.append(None)
            continue
        values.extend(numbers("viewport", part, 1))
    vw, vh = values[0], values[1]
    if (vw is None or vh is None or vw != int(vw) or vh != int(vh)
            or not 0 < vw <= MAX_VIEWPORT or not 0 < vh <= MAX_VIEWPORT):
        raise BadRequest(f"viewport width and height must be integers in 1..{MAX_VIEWPORT}: "
                         f"{text!r}", parameter="viewport")
    if any(v is not None and v == 0 for v in values[4:6]):
        raise BadRequest(f"viewport sw and sh must not be 0: {text!r}", parameter="viewport")
    try:
        return Viewport.of(values)
    except RenderError as exc:
        raise BadRequest(f"viewport {text!r}: {exc}", parameter="viewport") from None


def parse_quality(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        quality = int(text)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise BadRequest(f"quality must be an integer in 1..100: {text!r}", parameter="quality")
    return quality


def parse_bit_depth(text: str | None, media_type: str) -> int:
    """``bitdepth=16`` (not in PS3.18): 16-bit grayscale PNG; 8 otherwise."""
    if text is None or text == "8":
        return 8
    if text != "16":
        raise BadRequest(f"bitdepth must be 8 or 16: {text!r}", parameter="bitdepth")
    if media_type != "image/png":
        raise BadRequest("bitdepth=16 needs image/png", parameter="bitdepth")
    return 16


# --- RT overlay parameters ---------------------------------------------------------------

OVERLAY_PARAMETERS = ("structures", "rois", "dose", "isodose", "fuse", "fuse_window",
                      "registration", "opacity")
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # leading zeros tolerated
DOSE_OPACITY = 0.4
FUSE_OPACITY = 0.5
MAX_ISODOSE_LEVELS = 20


@dataclass(frozen=True)
class OverlayRequest:
    """RT overlays asked for by query parameters (see :func:`parse_overlays`)."""

    structures: str | None = None
    rois: tuple[int, ...] | None = None
    dose: str | None = None
    isodose: tuple[float, ...] | None = None
    fuse: str | None = None
    fuse_window: tuple[float, float] | None = None
    registration: str | None = None
    opacity: float | None = None

    @property
    def first_parameter(self) -> str:
        return next(n for n in OVERLAY_PARAMETERS if getattr(self, n) is not None)


def parse_uid(params: Any, name: str) -> str | None:
    if name not in params:
        return None
    text = params[name].strip()
    if not text or len(text) > 64 or not UID_PATTERN.match(text):
        raise BadRequest(f"{name} must be a UID (digits and dots, at most 64 characters): "
                         f"{params[name]!r}", parameter=name)
    return text


def parse_overlays(params: Any) -> OverlayRequest | None:
    """``structures={RTSTRUCT SOP Instance UID}[&rois=1,3,5]``, ``dose={RTDOSE SOP Instance
    UID}[&isodose=10,20,30]``, ``fuse={Series Instance UID}[&fuse_window=center,width]``,
    ``registration={REG SOP Instance UID}`` and ``opacity`` (0..1, dose wash and fusion).

    None when none is given. Malformed values, and ``rois``/``isodose``/``fuse_window``/
    ``opacity``/``registration`` without the overlay they qualify, are 400 naming the
    parameter.
    """
    if not any(name in params for name in OVERLAY_PARAMETERS):
        return None
    structures, dose, fuse = (parse_uid(params, n) for n in ("structures", "dose", "fuse"))
    registration = parse_uid(params, "registration")
    rois = None
    if "rois" in params:
        try:
            rois = tuple(int(v) for v in params["rois"].split(","))
        except ValueError:
            raise BadRequest(f"rois must be comma-separated ROI Numbers (integers): "
                             f"{params['rois']!r}", parameter="rois") from None
    isodose = None
    if "isodose" in params:
        try:
            isodose = tuple(float(v) for v in params["isodose"].split(","))
        except ValueError:
            isodose = ()
        if (not 1 <= len(isodose) <= MAX_ISODOSE_LEVELS
                or not all(math.isfinite(v) and v > 0 for v in isodose)):
            raise BadRequest(f"isodose must be 1 to {MAX_ISODOSE_LEVELS} comma-separated "
                             f"positive doses (Gy): {params['isodose']!r}",
                             parameter="isodose")
    fuse_window = None
    if "fuse_window" in params:
        center, width = numbers("fuse_window", params["fuse_window"], 2)
        if width <= 0:
            raise BadRequest("fuse_window width must be positive", parameter="fuse_window")
        fuse_window = (center, width)
    opacity = None
    if "opacity" in params:
        opacity = numbers("opacity", params["opacity"], 1)[0]
        if not 0 <= opacity <= 1:
            raise BadRequest("opacity must be within 0..1", parameter="opacity")
    needs = {"rois": (rois, structures, "structures"), "isodose": (isodose, dose, "dose"),
             "fuse_window": (fuse_window, fuse, "fuse"),
             "opacity": (opacity, dose or fuse, "dose or fuse"),
             "registration": (registration, structures or dose or fuse,
                              "structures, dose or fuse")}
    for name, (value, base, what) in needs.items():
        if value is not None and base is None:
            raise BadRequest(f"{name} applies only together with {what}", parameter=name)
    return OverlayRequest(structures, rois, dose, isodose, fuse, fuse_window, registration,
                          opacity)


def series_study(store: Store, series: str, *, parameter: str) -> str:
    """The study of a stored series (any study), 404 naming ``parameter`` otherwise."""
    query = (select(SERIES_TABLE.c.study_instance_uid)
             .where(SERIES_TABLE.c.series_instance_uid == series))
    with store.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no series {series} is stored ({parameter})", parameter=parameter)
    return row[0]


def apply_overlays(
    store: Store, volumes: Volumes, request: Request | None, rgb: np.ndarray,
    plane: overlay.PlaneGeometry, image_for: str | None, wanted: OverlayRequest,
) -> np.ndarray:
    """Fusion, then dose wash and isodose lines, then contours, on an RGB uint8 image whose
    pixels lie on ``plane`` (patient mm of the Frame of Reference ``image_for``)."""

    def matrix(other_for: str | None, what: str) -> np.ndarray | None:
        m, _ = rts.frame_transform(store.engine, wanted.registration, image_for, other_for,
                                   what=what)
        return None if np.allclose(m, np.eye(4)) else m

    if wanted.fuse:
        series = wanted.fuse
        study = series_study(store, series, parameter="fuse")
        try:
            found, _ = volumes.geometry(study, series)
            m = matrix(found.geometry.frame_of_reference_uid, f"fuse (series {series})")
            other, _ = volumes.volume(request, study, series)
        except NotAVolume as exc:
            raise Unprocessable(f"fuse: series {series} is not a volume: {exc.reason}",
                                parameter="fuse") from None
        except (DecodeError, UnsupportedTransferSyntax) as exc:
            raise Unprocessable(f"fuse: cannot decode series {series}: {exc}",
                                parameter="fuse") from None
        points = plane.pixel_centres().reshape(-1, 3)
        if m is not None:
            points = points @ m[:3, :3].T + m[:3, 3]
        values = sample_volume(other, points).reshape(plane.rows, plane.cols)
        if wanted.fuse_window is not None:
            window = wanted.fuse_window
        else:
            default = other.window or default_window(other.values)
            window = (default.center, default.width)
        opacity = FUSE_OPACITY if wanted.opacity is None else wanted.opacity
        rgb = overlay.fuse(rgb, values, window, opacity)
    if wanted.dose:
        loc = rts.instance_by_sop(store, wanted.dose, "RTDOSE", parameter="dose")
        dose, values = rts.load_dose(store, loc)
        m = matrix(dose.frame_of_reference_uid, f"dose overlay (RT Dose {wanted.dose})")
        maximum = float(np.nanmax(values)) if values.size else 0.0
        if dose.grid is not None and maximum > 0:
            on_plane = overlay.sample_on_plane(plane, dose.grid, values, m)
            opacity = DOSE_OPACITY if wanted.opacity is None else wanted.opacity
            rgb = overlay.dose_wash(rgb, on_plane, max_dose=maximum, opacity=opacity,
                                    isodose_levels=wanted.isodose)
    if wanted.structures:
        rois = rts.overlay_rois(store.engine, wanted.structures, wanted.rois, image_for,
                                wanted.registration)
        rgb = overlay.contour_overlay(rgb, plane, overlay.roi_overlays(rois))
    return rgb


def frame_plane(desc: PixelDescription, shape: tuple[int, ...]) -> overlay.PlaneGeometry:
    """The patient geometry of a (single-frame) description's pixels, for overlays."""
    ipp, iop = desc.image_position_patient, desc.image_orientation_patient
    spacing = desc.pixel_spacing
    if ipp is None or iop is None or spacing is None:
        raise Unprocessable("overlays need the image's Image Position (Patient), Image "
                            "Orientation (Patient) and Pixel Spacing")
    return overlay.PlaneGeometry(np.asarray(ipp), np.asarray(iop[:3]), np.asarray(iop[3:]),
                                 (spacing[0], spacing[1]), shape[0], shape[1])


@dataclass(frozen=True)
class RenderOptions:
    media_type: str
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int | None = None
    bit_depth: int = 8
    thumbnail: bool = False
    overlays: OverlayRequest | None = None


def rendered_options(request: Request, *, thumbnail: bool) -> RenderOptions:
    params = request.query_params
    media_type = choose_media_type(accept_ranges(request), RENDERED_TYPES)
    if thumbnail:
        return RenderOptions(media_type, viewport=parse_viewport(params.get("viewport"),
                                                                 full=False),
                             quality=THUMBNAIL_QUALITY, thumbnail=True)
    overlays = parse_overlays(params)
    bit_depth = parse_bit_depth(params.get("bitdepth"), media_type)
    if overlays is not None and bit_depth != 8:
        raise BadRequest("RT overlays give 8-bit RGB images; bitdepth=16 cannot carry them",
                         parameter="bitdepth")
    return RenderOptions(
        media_type,
        window=parse_window(params.get("window")),
        viewport=parse_viewport(params.get("viewport")),
        quality=parse_quality(params.get("quality")),
        bit_depth=bit_depth,
        overlays=overlays,
    )


@contextmanager
def pixel_errors() -> Iterator[None]:
    """Library errors as HTTP errors."""
    try:
        yield
    except NotAVolume as exc:
        raise Unprocessable(f"not a volume: {exc.reason}") from None
    except UnsupportedTransferSyntax as exc:
        raise NotAcceptable(f"cannot decode pixel data: {exc}") from None
    except DecodeError as exc:
        raise Unprocessable(f"cannot decode pixel data: {exc}") from None
    except (RenderError, ReformatError) as exc:
        raise BadRequest(str(exc)) from None
    except PixelError as exc:
        raise Unprocessable(str(exc)) from None


# --- frames ----------------------------------------------------------------------------


def description_with_palette(store: Store, loc: InstanceLocation) -> PixelDescription:
    desc = transcoding.description_of(loc.metadata_json)
    if desc.photometric_interpretation == "PALETTE COLOR" and not desc.has_palette_data:
        bulk = orjson.loads(loc.bulk_json) if loc.bulk_json else {}
        tags = ("00281201", "00281202", "00281203")
        if all(tag in bulk for tag in tags):
            data = []
            for tag in tags:
                offset, length, vr = bulk[tag]
                value = store.blobs.read_ranges(loc.blob_key, [[offset, length]])
                if loc.transfer_syntax_uid == "1.2.840.10008.1.2.2":
                    value = transcoding.swap_bulk_to_little_endian(value, vr)
                data.append(value)
            desc = desc.with_palette_data(*data)
    return desc


def fast_native(data: bytes, ts: str, desc: PixelDescription) -> np.ndarray | None:
    """Native little-endian grayscale frames straight from their bytes (no codec)."""
    if (ts not in NATIVE_TRANSFER_SYNTAXES or ts == "1.2.840.10008.1.2.2"
            or desc.samples_per_pixel != 1 or desc.bits_allocated not in (8, 16, 32)
            or len(data) < desc.frame_length):
        return None
    arr = np.frombuffer(data, native_dtype(desc), count=desc.rows * desc.columns)
    arr = arr.reshape(desc.rows, desc.columns)
    unused = desc.bits_allocated - desc.bits_stored
    if 0 < unused < desc.bits_allocated:
        if desc.is_signed:  # sign-extend from Bits Stored (PS3.5 8.1.1)
            arr = (arr << unused) >> unused
        else:
            arr = arr & np.array((1 << desc.bits_stored) - 1, dtype=arr.dtype)
    return arr


def decoded_frame(
    store: Store, loc: InstanceLocation, number: int, desc: PixelDescription
) -> tuple[np.ndarray, str]:
    """Frame ``number`` (1-based) decoded, with the photometric interpretation it has now."""
    ranges = loc.frames
    if ranges is not None:
        data = store.blobs.read_ranges(loc.blob_key, ranges[number - 1])
        fast = fast_native(data, loc.transfer_syntax_uid, desc)
        if fast is not None:
            return fast, desc.photometric_interpretation
        decoded = decode_frame_with_info(data, loc.transfer_syntax_uid, desc)
        return decoded.pixels, decoded.photometric_interpretation
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    try:  # a full parse: deflated data sets are inflated by dcmread only
        dataset = dcmread(store.blobs.path(loc.blob_key))
        arr = pixel_array(dataset, index=number - 1)
    except Exception as exc:  # pydicom and its plugins raise assorted exception types
        raise DecodeError(str(exc)) from exc
    photometric = desc.photometric_interpretation
    if desc.samples_per_pixel == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pixel_array converts YBR to RGB
    return arr, photometric


def render_instance_frame(
    store: Store, loc: InstanceLocation, number: int, options: RenderOptions,
    volumes: Volumes | None = None, request: Request | None = None,
) -> bytes:
    count = loc.number_of_frames or 0
    if count == 0:
        raise NotFound(f"instance {loc.sop_instance_uid} has no pixel data")
    if number > count:
        raise NotFound(f"instance {loc.sop_instance_uid} has {count} frame(s); no frame {number}")
    with pixel_errors():
        desc = description_with_palette(store, loc).for_frame(number - 1)
        pixels, photometric = decoded_frame(store, loc, number, desc)
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


def render_target(store: Store, params: dict[str, str]) -> tuple[InstanceLocation, int]:
    """The instance and frame number a rendered/thumbnail URL shows."""
    study, series, sop = params["study"], params.get("series"), params.get("instance")
    if sop is None:
        return representative(store, study, series)
    loc = store.locate(study, series, sop, with_frames=True, with_metadata=True,
                       with_bulk=True)[0]
    number = 1
    if "frames" in params:
        from dicomweb.wado import parse_frame_list

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


def rendered_endpoint(store: Store, *, thumbnail: bool,
                      volumes: Volumes | None = None) -> Callable[[Request], Any]:
    async def rendered(request: Request) -> Response:
        """Rendered images are kept under their ETag: OHIF asks for the same thumbnails
        and images again and again; a client holding one gets a 304."""
        options = rendered_options(request, thumbnail=thumbnail)
        app_store = request.app.state.store
        loc, number = await run_in_threadpool(render_target, app_store, dict(request.path_params))
        etag = rendered_etag(loc, number, options)
        if etag is None:
            body = await run_in_threadpool(
                render_instance_frame, app_store, loc, number, options, volumes, request
            )
            return Response(body, media_type=options.media_type)
        if http_cache.matches(request, etag):
            return http_cache.not_modified(etag, "Accept")
        bodies: http_cache.BodyCache = request.app.state.bodies
        cached = bodies.get((etag,))
        if cached is None:
            body = await run_in_threadpool(
                render_instance_frame, app_store, loc, number, options, volumes, request
            )
            cached = (body, None)
            bodies.put((etag,), cached)
        headers = {**http_cache.validator_headers(etag), "Vary": "Accept"}
        return Response(cached[0], media_type=options.media_type, headers=headers)

    rendered.__name__ = "retrieve_thumbnail" if thumbnail else "retrieve_rendered"
    return rendered


# --- volumes ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SeriesVolume(Volume):
    """A volume with the series' default presentation (window, MONOCHROME1)."""

    window: Window | None = None
    invert: bool = False


@dataclass(frozen=True)
class SeriesGeometry:
    geometry: VolumeGeometry
    window: Window | None
    invert: bool


class Volumes:
    """Volumes of series, decoded from indexed frame bytes and cached by version."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: VolumeCache | None = None
        self._geometries: OrderedDict[tuple[str, str], SeriesGeometry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._pool: ThreadPoolExecutor | None = None

    def cache(self, request: Request | None = None) -> VolumeCache:
        with self._lock:
            if self._cache is None:
                settings = request.app.state.settings if request else self.store.settings
                self._cache = VolumeCache(settings.volume_cache_bytes)
                if request is not None:
                    request.app.state.volume_cache = self._cache
            return self._cache

    def version(self, study: str, series: str) -> str:
        """Changes whenever an instance of the series is stored, replaced or deleted."""
        query = (
            select(INSTANCE_TABLE.c.sop_instance_uid, INSTANCE_TABLE.c.blob_sha256)
            .where(INSTANCE_TABLE.c.study_instance_uid == study)
            .where(INSTANCE_TABLE.c.series_instance_uid == series)
            .order_by(INSTANCE_TABLE.c.sop_instance_uid)
        )
        with self.store.engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            raise NotFound(f"no instance matches study {study}, series {series}")
        digest = hashlib.sha1(usedforsecurity=False)
        for sop, sha in rows:
            digest.update(f"{sop}:{sha}\n".encode())
        return f"{len(rows)}-{digest.hexdigest()[:16]}"

    def _slices(
        self, locations: list[InstanceLocation]
    ) -> tuple[list[SliceGeometry], list[tuple[InstanceLocation, int, PixelDescription]], dict]:
        slices: list[SliceGeometry] = []
        refs: list[tuple[InstanceLocation, int, PixelDescription]] = []
        descs: dict[str, PixelDescription] = {}
        for loc in locations:
            if not loc.number_of_frames:
                continue  # presentation states, SR... in an image series
            desc = transcoding.description_of(loc.metadata_json)
            descs[loc.sop_instance_uid] = desc
            if desc.samples_per_pixel != 1:
                raise NotAVolume("colour images cannot form a volume")
            for index in range(loc.number_of_frames):
                info = desc.frame_info(index)
                position, orientation = info.image_position_patient, info.image_orientation_patient
                if position is None or orientation is None or info.pixel_spacing is None:
                    raise NotAVolume(
                        f"instance {loc.sop_instance_uid} frame {index + 1} lacks Image Position "
                        "(Patient), Image Orientation (Patient) or Pixel Spacing"
                    )
                slices.append(SliceGeometry(
                    loc.sop_instance_uid, index + 1, position, orientation, info.pixel_spacing,
                    desc.rows, desc.columns, desc.frame_of_reference_uid,
                    1.0 if info.rescale_slope is None else info.rescale_slope,
                    0.0 if info.rescale_intercept is None else info.rescale_intercept,
                ))
                refs.append((loc, index, desc))
        return slices, refs, descs

    def _series_geometry(
        self, slices: list[SliceGeometry], refs: list, geometry: VolumeGeometry
    ) -> SeriesGeometry:
        middle_loc, middle_index, desc = refs[geometry.order[len(geometry.order) // 2]]
        info = desc.frame_info(middle_index)
        window = None
        if info.window_centers and info.window_widths:
            function = (desc.voi_lut_function or "LINEAR").upper()
            try:
                window = Window.of((info.window_centers[0], info.window_widths[0],
                                    function if function in WINDOW_FUNCTIONS else "LINEAR"))
            except RenderError:
                window = None
        return SeriesGeometry(geometry, window,
                              desc.photometric_interpretation == "MONOCHROME1")

    def geometry(self, study: str, series: str) -> tuple[SeriesGeometry, str]:
        """Geometry from metadata only (no pixels); cached per version."""
        key = VolumeCache.key(series, self.version(study, series))
        with self._lock:
            if key in self._geometries:
                self._geometries.move_to_end(key)
                return self._geometries[key], key[1]
        cached = self.cache().get(key)
        if isinstance(cached, SeriesVolume):
            found = SeriesGeometry(cached.geometry, cached.window, cached.invert)
        else:
            locations = self.store.locate(study, series, with_metadata=True)
            slices, refs, _ = self._slices(locations)
            found = self._series_geometry(slices, refs, build_volume_geometry(slices))
        self._remember(key, found)
        return found, key[1]

    def _remember(self, key: tuple[str, str], found: SeriesGeometry) -> None:
        with self._lock:
            self._geometries[key] = found
            while len(self._geometries) > 256:
                self._geometries.popitem(last=False)

    def volume(self, request: Request, study: str, series: str) -> tuple[SeriesVolume, bool]:
        """The cached volume of the series, or loaded now; also whether it was cached."""
        cache = self.cache(request)
        key = VolumeCache.key(series, self.version(study, series))
        volume = cache.get(key)
        if isinstance(volume, SeriesVolume):
            return volume, True
        with self._lock:
            lock = self._loading.setdefault(key, threading.Lock())
        try:
            with lock:  # one load per series version; concurrent requests wait for it
                volume = cache.get(key)
                if isinstance(volume, SeriesVolume):
                    return volume, True
                volume = self._load(study, series)
                cache.invalidate_series(series)  # older versions are stale now
                cache.put(key, volume)
                self._remember(key, SeriesGeometry(volume.geometry, volume.window,
                                                   volume.invert))
        finally:
            with self._lock:
                self._loading.pop(key, None)
        return volume, False

    def _load(self, study: str, series: str) -> SeriesVolume:
        locations = self.store.locate(study, series, with_frames=True, with_metadata=True)
        slices, refs, _ = self._slices(locations)
        geometry = build_volume_geometry(slices)
        presentation = self._series_geometry(slices, refs, geometry)
        cols, rows, n = geometry.size
        values = np.empty((n, rows, cols), dtype=np.float32)
        position = {src: k for k, src in enumerate(geometry.order)}

        def fill(src: int) -> None:
            loc, index, desc = refs[src]
            pixels, _ = decoded_frame(self.store, loc, index + 1, desc)
            if pixels.shape != (rows, cols):
                raise NotAVolume(f"frame {index + 1} of {loc.sop_instance_uid} has shape "
                                 f"{pixels.shape}, expected {(rows, cols)}")
            k = position[src]
            out = values[k]
            out[...] = pixels
            slope, intercept = geometry.rescale[k]
            if slope != 1.0:
                out *= np.float32(slope)
            if intercept != 0.0:
                out += np.float32(intercept)

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="volume")
            pool = self._pool
        list(pool.map(fill, range(n)))
        return SeriesVolume(values=values, geometry=geometry, window=presentation.window,
                            invert=presentation.invert)


def geometry_json(series: str, found: SeriesGeometry) -> dict[str, Any]:
    g = found.geometry
    window = found.window
    return {
        "series_instance_uid": series,
        "frame_of_reference_uid": g.frame_of_reference_uid,
        "size": list(g.size),
        "spacing": list(g.spacing),
        "origin": list(g.origin),
        "direction": [list(v) for v in g.direction],
        "row_direction": list(g.direction[0]),
        "column_direction": list(g.direction[1]),
        "normal": list(g.direction[2]),
        "evenly_spaced": g.evenly_spaced,
        "sheared": g.sheared,
        "slice_positions": list(g.slice_positions),
        "instance_order": [sop for sop, _ in g.instance_order],
        "frame_numbers": [frame for _, frame in g.instance_order],
        "window": None if window is None else
        {"center": window.center, "width": window.width, "function": window.function},
        "monochrome1": found.invert,
    }


def volume_endpoint(volumes: Volumes) -> Callable[[Request], Any]:
    async def volume_geometry(request: Request) -> Response:
        study, series = request.path_params["study"], request.path_params["series"]
        cache = volumes.cache(request)
        with pixel_errors():
            found, version = await run_in_threadpool(volumes.geometry, study, series)
        body = geometry_json(series, found)
        body["version"] = version
        body["cache"] = {**cache.stats(), "loaded": VolumeCache.key(series, version) in cache}
        body = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    return volume_geometry


def vector(text: str | None, name: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    x, y, z = numbers(name, text, 3)
    return (x, y, z)


@dataclass(frozen=True)
class MprRequest:
    plane: str
    position: float | None
    index: int | None
    normal: tuple[float, float, float] | None
    point: tuple[float, float, float] | None
    spacing: float | tuple[float, float] | None
    media_type: str
    window: Window | None
    viewport: Viewport | None
    quality: int | None
    overlays: OverlayRequest | None = None


def parse_mpr(request: Request) -> MprRequest:
    plane = request.path_params["plane"].lower()
    if plane not in PLANES:
        raise NotFound(f"no MPR plane {plane!r}; planes are {', '.join(PLANES)}")
    params = request.query_params
    position = numbers("position", params["position"], 1)[0] if "position" in params else None
    index = None
    if "index" in params:
        try:
            index = int(params["index"])
        except ValueError:
            raise BadRequest(f"index must be an integer: {params['index']!r}",
                             parameter="index") from None
    if position is not None and index is not None:
        raise BadRequest("give position or index, not both", parameter="index")
    normal = vector(params.get("normal"), "normal")
    if plane == "oblique" and normal is None:
        raise BadRequest("an oblique plane needs normal=x,y,z", parameter="normal")
    if plane != "oblique" and normal is not None:
        raise BadRequest(f"normal applies to oblique planes only, not {plane}",
                         parameter="normal")
    if normal is not None and math.hypot(*normal) < 1e-9:
        raise BadRequest("normal must not be the zero vector", parameter="normal")
    spacing: float | tuple[float, float] | None = None
    if "spacing" in params:
        values = numbers("spacing", params["spacing"], (1, 2))
        if min(values) <= 0:
            raise BadRequest("spacing must be positive", parameter="spacing")
        spacing = values[0] if len(values) == 1 else (values[0], values[1])
    media_type = choose_media_type(accept_ranges(request), MPR_TYPES)
    overlays = parse_overlays(params)
    if overlays is not None and not media_type.startswith("image/"):
        raise BadRequest(f"RT overlays apply to image outputs (image/png, image/jpeg) only, "
                         f"not {media_type}", parameter=overlays.first_parameter)
    return MprRequest(
        plane, position, index, normal, vector(params.get("point"), "point"), spacing,
        media_type, parse_window(params.get("window")), parse_viewport(params.get("viewport")),
        parse_quality(params.get("quality")), overlays,
    )


def fmt(values: Any) -> str:
    return ",".join(repr(float(v)) for v in values)


def plane_headers(plane: Reformat, volume: SeriesVolume, cached: bool) -> dict[str, str]:
    headers = {
        "X-Plane-Origin": fmt(plane.origin),
        "X-Plane-Row-Direction": fmt(plane.row_direction),
        "X-Plane-Column-Direction": fmt(plane.column_direction),
        "X-Plane-Normal": fmt(plane.normal),
        "X-Plane-Pixel-Spacing": fmt(plane.pixel_spacing),
        "X-Plane-Size": f"{plane.values.shape[0]},{plane.values.shape[1]}",
        "X-Plane-Position": repr(float(plane.position)),
        "X-Volume-Cache": "hit" if cached else "miss",
    }
    if plane.index is not None:
        headers["X-Plane-Index"] = str(plane.index)
    if plane.plane_count is not None:
        headers["X-Plane-Count"] = str(plane.plane_count)
    if volume.geometry.frame_of_reference_uid:
        headers["X-Frame-Of-Reference-UID"] = volume.geometry.frame_of_reference_uid
    return headers


def mpr_body(volumes: Volumes, request: Request, mpr: MprRequest) -> tuple[bytes, dict[str, str]]:
    study, series = request.path_params["study"], request.path_params["series"]
    with pixel_errors():
        volume, cached = volumes.volume(request, study, series)
        plane = reformat(volume, mpr.plane, position_mm=mpr.position, index=mpr.index,
                         normal=mpr.normal, point=mpr.point, spacing=mpr.spacing)
        headers = plane_headers(plane, volume, cached)
        if mpr.media_type == "application/octet-stream":
            return plane.values.astype("<f4", copy=False).tobytes(), headers
        if mpr.media_type == "application/json":
            body = {
                "origin": list(plane.origin),
                "row_direction": list(plane.row_direction),
                "column_direction": list(plane.column_direction),
                "normal": list(plane.normal),
                "pixel_spacing": list(plane.pixel_spacing),
                "size": list(plane.values.shape),
                "position": plane.position,
                "index": plane.index,
                "plane_count": plane.plane_count,
                "frame_of_reference_uid": volume.geometry.frame_of_reference_uid,
                "values": plane.values,  # orjson writes NaN (outside the volume) as null
            }
            return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers
        window = mpr.window or volume.window
        if mpr.overlays is not None:
            # Window to 8 bits, RGB, overlays, then the viewport (crop and resize).
            voi = window or default_window(plane.values)
            gray = apply_window(plane.values, voi)
            if volume.invert:
                gray = np.float32(255.0) - gray
            rgb = apply_overlays(volumes.store, volumes, request, overlay.rgb8(gray),
                                 overlay.PlaneGeometry.from_reformat(plane),
                                 volume.geometry.frame_of_reference_uid, mpr.overlays)
            image = encode_image(apply_viewport(rgb.astype(np.float32), mpr.viewport),
                                 mpr.media_type, quality=mpr.quality)
            return image, headers
        image = render_float_image(
            plane.values,
            None if window is None else window.center,
            None if window is None else window.width,
            function="LINEAR" if window is None else window.function,
            media_type=mpr.media_type,
            viewport=mpr.viewport,
            quality=mpr.quality,
            invert=volume.invert,
        )
        return image, headers


def mpr_endpoint(volumes: Volumes) -> Callable[[Request], Any]:
    async def retrieve_mpr(request: Request) -> Response:
        mpr = parse_mpr(request)
        body, headers = await run_in_threadpool(mpr_body, volumes, request, mpr)
        return Response(body, media_type=mpr.media_type, headers=headers)

    return retrieve_mpr


# --- the route table ---------------------------------------------------------------------


def routes(store: Store) -> list[Route]:
    """Rendered/thumbnail resources at every level, volume geometry and MPR."""
    volumes = Volumes(store)
    table: list[Route] = []
    for suffix, thumbnail in (("/rendered", False), ("/thumbnail", True)):
        endpoint = rendered_endpoint(store, thumbnail=thumbnail, volumes=volumes)
        for base in (INSTANCE + "/frames/{frames}", INSTANCE, SERIES, STUDY):
            table.append(Route(base + suffix, endpoint, methods=["GET"]))
    table.append(Route(SERIES + "/volume", volume_endpoint(volumes), methods=["GET"]))
    table.append(Route(SERIES + "/mpr/{plane}", mpr_endpoint(volumes), methods=["GET"]))
    return table

