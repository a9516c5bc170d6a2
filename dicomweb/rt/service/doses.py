"""RT Doses: geometry from the index, values from the stored file, decoded once and kept in a
small LRU (:data:`DOSE_CACHE`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from pydicom import dcmread
from sqlalchemy import Engine
from sqlmodel import Session, select

from dicomweb.errors import Unprocessable
from dicomweb.store.repository import InstanceLocation, Store

from ..dose import DoseGrid, dose_values
from ..errors import RtError
from ..grid import Grid
from ..interpolation import DoseSampler
from ..tables import RtDoseRow
from .instances import loads, not_indexed


def dose_row(engine: Engine, sop: str) -> RtDoseRow:
    with Session(engine) as session:
        row = session.exec(select(RtDoseRow).where(RtDoseRow.sop_instance_uid == sop)).first()
    if row is None:
        raise not_indexed(sop, "RT Dose")
    return row


def dose_grid_object(row: RtDoseRow) -> DoseGrid:
    grid = Grid.from_dict(loads(row.grid)) if row.grid else None
    scaling = row.scaling if row.scaling is not None and np.isfinite(row.scaling) else 1.0
    return DoseGrid(row.sop_instance_uid, grid, row.frame_of_reference_uid, row.units,
                    row.dose_type, row.summation_type, max(scaling, 0.0),
                    [row.referenced_plan_uid] if row.referenced_plan_uid else [],
                    has_pixel_data=grid is not None)


class DoseCache:
    """Thread-safe LRU of decoded dose grids (float32, with the interpolation terms derived
    from them), bounded by their total bytes."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], DoseSampler] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: tuple[str, str], loader: Any) -> DoseSampler:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        values = loader()
        values.setflags(write=False)
        sampler = DoseSampler(values)
        with self._lock:
            sampler = self._items.setdefault(key, sampler)
            self._items.move_to_end(key)
            self.trim()
        return sampler

    def trim(self) -> None:
        """Drop the least recently used grids beyond ``max_bytes`` (derived terms count)."""
        while sum(v.nbytes for v in self._items.values()) > self.max_bytes and \
                len(self._items) > 1:
            self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


DOSE_CACHE = DoseCache()


def load_dose(store: Store, loc: InstanceLocation) -> tuple[DoseGrid, np.ndarray]:
    """Geometry (from the index) and values in the Dose Units (from the stored file)."""
    dose, sampler = load_dose_sampler(store, loc)
    return dose, sampler.values


def load_dose_sampler(store: Store, loc: InstanceLocation) -> tuple[DoseGrid, DoseSampler]:
    """As :func:`load_dose`, the values inside their (cached) :class:`DoseSampler`."""
    row = dose_row(store.engine, loc.sop_instance_uid)
    dose = dose_grid_object(row)
    if dose.grid is None:
        raise Unprocessable(f"RT Dose {loc.sop_instance_uid} has no usable dose grid "
                            f"({'; '.join(loads(row.warnings) or []) or 'no pixel data'})")

    def read() -> np.ndarray:
        ds = dcmread(store.blobs.path(loc.blob_key))
        try:
            return dose_values(ds, dose)
        except RtError as exc:
            raise Unprocessable(str(exc)) from exc

    # The blob key changes whenever the stored file does, so it versions the cache entry.
    sampler = DOSE_CACHE.get_or_load((loc.sop_instance_uid, loc.blob_key), read)
    if sampler.values.shape != dose.grid.shape:
        raise Unprocessable(f"RT Dose pixel data {sampler.values.shape} does not match its "
                            f"grid {dose.grid.shape}")
    return dose, sampler
