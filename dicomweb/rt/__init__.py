"""Radiotherapy objects: structure sets, doses, DVHs, registrations and plans (PS3.3).

Pure library (no HTTP): parse already-read pydicom datasets into validated dataclasses,
collect parse problems as warnings, compute geometry/DVHs and build index rows.
"""

from .dose import DoseGrid, dose_at_point, dose_values, maximum, parse_dose, resample_dose
from .dvh import Dvh, compute_dvh
from .errors import InvalidGeometry, NoDoseData, NoRegistrationPath, NotAnRtObject, RtError
from .grid import Grid
from .plan import Beam, ControlPoint, FractionGroup, Plan, parse_plan
from .rasterize import rasterize_roi
from .registration import Registration, apply, parse_registration, transform
from .roi_measures import roi_bounds, roi_centroid, roi_volume_cc
from .structures import Contour, ContourGeometricType, Roi, StructureSet, parse_structure_set

__all__ = [
    "Beam", "Contour", "ContourGeometricType", "ControlPoint", "DoseGrid", "Dvh",
    "FractionGroup", "Grid", "InvalidGeometry", "NoDoseData", "NoRegistrationPath",
    "NotAnRtObject", "Plan", "Registration", "Roi", "RtError", "StructureSet", "apply",
    "compute_dvh", "dose_at_point", "dose_values", "maximum", "parse_dose", "parse_plan",
    "parse_registration", "parse_structure_set", "rasterize_roi", "resample_dose",
    "roi_bounds", "roi_centroid", "roi_volume_cc", "transform",
]
