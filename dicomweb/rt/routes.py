"""The route table of the RT extension, mounted under the DICOMweb root by ``create_app``.

Handlers live in :mod:`dicomweb.rt.api`, one module per resource family. Answers come from
the RT index tables (filled at ingest) and, for dose values, from the stored RT Dose file
(decoded grids are cached). JSON bodies are snake_case; arrays go out as little-endian
``application/octet-stream`` with their geometry in ``X-Grid-*`` headers.
"""

from __future__ import annotations

from starlette.routing import Route

from dicomweb.store.repository import Store

from .api import (
    doses,
    dvh,
    fiducials,
    graph,
    images,
    plans,
    records,
    registrations,
    structures,
    sums,
)
from .api.common import INSTANCE, STUDY, grid_headers, grid_json
from .api.structures import run_lengths


def routes(store: Store) -> list[Route]:
    return [
        Route(STUDY + "/rt", graph.get_study_graph, methods=["GET"]),
        Route(STUDY + "/rt/transform", registrations.get_study_transform, methods=["GET"]),
        Route(STUDY + "/rt/dose/sum", sums.get_dose_sum, methods=["GET"]),
        Route(STUDY + "/rt/dose/sum/dvh", sums.get_dose_sum_dvh, methods=["GET"]),
        Route(INSTANCE + "/rt/rois", structures.get_rois, methods=["GET"]),
        Route(INSTANCE + "/rt/rois/{number}", structures.get_roi, methods=["GET"]),
        Route(INSTANCE + "/rt/rois/{number}/mask", structures.get_roi_mask, methods=["GET"]),
        Route(INSTANCE + "/rt/dose", doses.get_dose, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/values", doses.get_dose_values, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/point", doses.get_dose_point, methods=["GET"]),
        Route(INSTANCE + "/rt/dose/dvh", dvh.get_dvh, methods=["GET"]),
        Route(INSTANCE + "/rt/registration", registrations.get_registration, methods=["GET"]),
        Route(INSTANCE + "/rt/registration/transform", registrations.get_registration_transform,
              methods=["GET"]),
        Route(INSTANCE + "/rt/plan", plans.get_plan, methods=["GET"]),
        Route(INSTANCE + "/rt/plan/progress", records.get_plan_progress, methods=["GET"]),
        Route(INSTANCE + "/rt/record", records.get_record, methods=["GET"]),
        Route(INSTANCE + "/rt/fiducials", fiducials.get_fiducials, methods=["GET"]),
        Route(INSTANCE + "/rt/image", images.get_rt_image, methods=["GET"]),
    ]


__all__ = ["routes", "grid_json", "grid_headers", "run_lengths"]
