"""Volume geometry (``/studies/{study}/series/{series}/volume``) and multi-planar reformats
(``/studies/{study}/series/{series}/mpr/{plane}``) over HTTP, from the volume cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.rt import overlay

from .frames import PixelLimits, pixel_errors
from .mpr import Reformat, reformat
from .overlays import apply_overlays
from .params import MprRequest, parse_mpr
from .render import apply_viewport, apply_window, default_window, encode_image, render_float_image
from .series_volumes import SeriesGeometry, SeriesVolume, Volumes
from .volume import VolumeCache


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


#: Bytes per plane pixel the reformat and its rendering hold: sample points (3 float64),
#: interpolation weights and indices, the float values, the window output, the 8-bit image.
PLANE_BYTES_PER_PIXEL = 160
OUTPUT_BYTES_PER_PIXEL = 3 * 24


def plane_cost(volume: SeriesVolume, mpr: MprRequest) -> int:
    """The most memory one reformat takes: its plane is at most the volume's diagonal
    squared in voxels of the finest spacing."""
    size, spacing = volume.geometry.size, volume.geometry.spacing
    diagonal = math.hypot(*(n * s for n, s in zip(size, spacing, strict=True)))
    finest = min(spacing) if mpr.spacing is None else (
        mpr.spacing if isinstance(mpr.spacing, float) else min(mpr.spacing))
    side = diagonal / max(finest, 1e-3) + 2
    output = 0 if mpr.viewport is None else mpr.viewport.vw * mpr.viewport.vh
    return int(side * side * PLANE_BYTES_PER_PIXEL + output * OUTPUT_BYTES_PER_PIXEL)


def mpr_body(volumes: Volumes, request: Request, mpr: MprRequest) -> tuple[bytes, dict[str, str]]:
    study, series = request.path_params["study"], request.path_params["series"]
    budget = PixelLimits.of(request.app.state).budget
    with pixel_errors():
        volume, cached = volumes.volume(request, study, series)
        with budget.reserve(plane_cost(volume, mpr), "this reformat"):
            return mpr_answer(volumes, request, mpr, volume, cached)


def mpr_answer(volumes: Volumes, request: Request, mpr: MprRequest, volume: SeriesVolume,
               cached: bool) -> tuple[bytes, dict[str, str]]:
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
