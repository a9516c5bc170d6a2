"""Query parameters of the rendered, thumbnail and MPR resources, parsed into values.

Every malformed value is a 400 naming its parameter (PS3.18 8.3.5.1: viewport, window,
quality; the RT overlay parameters and MPR plane parameters are this server's own).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from dicomweb.errors import BadRequest, NotAcceptable, NotFound
from dicomweb.negotiation import MediaRange, parse_accept

from .errors import RenderError
from .mpr import PLANES
from .render import Viewport, Window

RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")
MPR_TYPES = ("image/png", "image/jpeg", "application/octet-stream", "application/json")
THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 80
MAX_VIEWPORT = 8192
#: PS3.18 8.3.5.1.4 spells the functions in lower case with a hyphen; PS3.3 with "_".
WINDOW_FUNCTIONS = {"LINEAR": "LINEAR", "LINEAR_EXACT": "LINEAR_EXACT", "SIGMOID": "SIGMOID"}


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
