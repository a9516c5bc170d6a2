"""The volume cache of series: volumes decoded from the indexed frame bytes, kept in a
:class:`VolumeCache` by series version, and their geometry from metadata alone.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from starlette.requests import Request

from dicomweb import metrics, transcoding
from dicomweb.errors import NotFound
from dicomweb.store.repository import InstanceLocation, Store
from dicomweb.store.tables import Instance, Series

from .description import PixelDescription
from .errors import NotAVolume, RenderError
from .frames import PixelLimits, decoded_frame
from .limits import attribute_frame_bytes, check_total
from .params import WINDOW_FUNCTIONS
from .render import Window
from .volume import SliceGeometry, Volume, VolumeCache, VolumeGeometry, build_volume_geometry

SERIES_TABLE = Series.__table__
INSTANCE_TABLE = Instance.__table__
DECODE_WORKERS = max(2, min(8, os.cpu_count() or 2))


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
        volume, cached = self._cached_or_loaded(request, study, series)
        metrics.record_volume_lookup(cached, self.cache(request).memory_used)
        return volume, cached

    def _cached_or_loaded(
        self, request: Request, study: str, series: str
    ) -> tuple[SeriesVolume, bool]:
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
                volume = self._load(study, series, PixelLimits.of(request.app.state))
                cache.invalidate_series(series)  # older versions are stale now
                cache.put(key, volume)
                self._remember(key, SeriesGeometry(volume.geometry, volume.window,
                                                   volume.invert))
        finally:
            with self._lock:
                self._loading.pop(key, None)
        return volume, False

    def _load(self, study: str, series: str, limits: PixelLimits) -> SeriesVolume:
        locations = self.store.locate(study, series, with_frames=True, with_metadata=True)
        slices, refs, _ = self._slices(locations)
        geometry = build_volume_geometry(slices)
        cols, rows, n = geometry.size
        volume_bytes = n * rows * cols * 4  # float32 values
        check_total(volume_bytes, limits.max_decoded_bytes, f"the volume of series {series}")
        frame_bytes = max(attribute_frame_bytes(desc) for _, _, desc in refs)
        cost = volume_bytes + DECODE_WORKERS * frame_bytes * 3
        with limits.budget.reserve(cost, f"loading the volume of series {series}"):
            return self._fill(geometry, slices, refs, limits)

    def _fill(self, geometry: VolumeGeometry, slices: list[SliceGeometry], refs: list,
              limits: PixelLimits) -> SeriesVolume:
        presentation = self._series_geometry(slices, refs, geometry)
        cols, rows, n = geometry.size
        values = np.empty((n, rows, cols), dtype=np.float32)
        position = {src: k for k, src in enumerate(geometry.order)}

        def fill(src: int) -> None:
            loc, index, desc = refs[src]
            pixels, _ = decoded_frame(self.store, loc, index + 1, desc,
                                      limits.max_decoded_bytes)
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
