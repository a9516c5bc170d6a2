"""Data access of the RT HTTP API: index rows → library objects, dose grids, image grids.

Everything here is synchronous (the route handlers call it through a thread pool) and reads
only what the index holds, except dose values, which come from the stored RT Dose file and are
kept in a small LRU (:data:`DOSE_CACHE`). No image file is ever parsed: an image series' grid
is built from its instances' stored DICOM JSON. One module per concern; callers use the names
re-exported here (``from dicomweb.rt import service as svc``).
"""

from .doses import DOSE_CACHE, DoseCache, dose_grid_object, dose_row, load_dose, load_dose_sampler
from .instances import KIND_NAMES, KINDS, instance_by_sop, loads, locate_rt, not_indexed
from .plans import PlanRows, plan_rows
from .registrations import (
    deformation_mapper,
    frame_transform,
    registration_objects,
    study_registration_uids,
)
from .series import SeriesGrid, series_grid
from .structures import (
    OVERLAY_CONTOUR_TYPES,
    contour_rows,
    load_roi,
    moved_roi,
    overlay_rois,
    roi_frame_of_reference,
    roi_row,
    roi_rows,
    structure_set_frames,
    structure_set_row,
)

__all__ = [
    "DOSE_CACHE", "DoseCache", "KINDS", "KIND_NAMES", "OVERLAY_CONTOUR_TYPES", "PlanRows",
    "SeriesGrid", "contour_rows", "deformation_mapper", "dose_grid_object", "dose_row",
    "frame_transform", "instance_by_sop", "load_dose", "load_dose_sampler", "load_roi", "loads",
    "locate_rt", "moved_roi", "not_indexed", "overlay_rois", "plan_rows", "registration_objects",
    "roi_frame_of_reference", "roi_row", "roi_rows", "series_grid", "structure_set_frames",
    "structure_set_row", "study_registration_uids",
]
