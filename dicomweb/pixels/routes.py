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

The endpoints live in :mod:`.rendered` and :mod:`.mpr_routes`; their query parameters are
parsed in :mod:`.params`, frames decoded in :mod:`.frames`, overlays drawn in
:mod:`.overlays` and series volumes cached in :mod:`.series_volumes`.
"""

from __future__ import annotations

from starlette.routing import Route

from dicomweb.store.repository import Store

from .mpr_routes import mpr_endpoint, volume_endpoint
from .rendered import rendered_endpoint
from .series_volumes import Volumes

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


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
