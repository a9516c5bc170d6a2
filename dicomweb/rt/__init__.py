"""Radiotherapy objects: structure sets, doses, DVHs, registrations and plans (PS3.3).

Pure library (no HTTP): parse already-read pydicom datasets into validated dataclasses,
collect parse problems as warnings, compute geometry/DVHs and build index rows.

The names below load their module on first use (PEP 562), so importing one submodule
(an ingest worker asks `_dicom` whether a file is an RT object) does not load them all:
scipy and the RT tables cost a spawned process most of a second.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES_BY_MODULE = {
    "dose": "DoseGrid dose_at_point dose_values maximum parse_dose resample_dose",
    "dvh": "Dvh compute_dvh",
    "errors": "InvalidGeometry NoDoseData NoRegistrationPath NotAnRtObject RtError",
    "grid": "Grid",
    "plan": "Beam ControlPoint FractionGroup Plan parse_plan",
    "rasterize": "rasterize_roi",
    "registration": "Registration apply parse_registration transform",
    "roi_measures": "roi_bounds roi_centroid roi_volume_cc",
    "structures": "Contour ContourGeometricType Roi StructureSet parse_structure_set",
}
_MODULE_OF = {name: module for module, names in _NAMES_BY_MODULE.items()
              for name in names.split()}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
