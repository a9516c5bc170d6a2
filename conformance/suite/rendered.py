"""Rendered and thumbnail resources (PS3.18 10.4.1.1.3/10.4.1.1.4, parameters 8.3.5)."""

from __future__ import annotations

from io import BytesIO

from PIL import Image

from .client import describe, expect_status, media_type
from .context import Context
from .registry import check, ensure, fail, unsupported


def _image(ctx: Context, path: str, accept: str | None, fmt: str) -> Image.Image:
    resp = ctx.client.get(path, accept=accept)
    expect_status(resp, 200, optional=True)
    ctype = media_type(resp.headers.get("Content-Type", ""))
    ensure(ctype == f"image/{fmt}", f"Content-Type {ctype!r} instead of image/{fmt}")
    try:
        img = Image.open(BytesIO(resp.content))
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoding problem fails the check
        fail(f"undecodable image/{fmt}: {exc}; {describe(resp)}")
    ensure(img.format and img.format.lower() == fmt, f"decoded as {img.format}, not {fmt}")
    return img


def _rendered(ctx: Context, fmt: str, suffix: str = "rendered", query: str = "") -> Image.Image:
    inst = ctx.instance()
    return _image(ctx, f"{inst.path}/{suffix}{query}", f"image/{fmt}", fmt)


@check("rendered.instance-jpeg", "PS3.18 10.4.1.1.3", "Rendered instance as image/jpeg")
def rendered_instance_jpeg(ctx: Context) -> str:
    img = _rendered(ctx, "jpeg")
    return f"{img.width}x{img.height} {img.mode}"


@check("rendered.instance-png", "PS3.18 10.4.1.1.3", "Rendered instance as image/png")
def rendered_instance_png(ctx: Context) -> str:
    img = _rendered(ctx, "png")
    return f"{img.width}x{img.height} {img.mode}"


@check("rendered.frame-jpeg", "PS3.18 10.4.1.1.3", "Rendered frame 2 of a multi-frame")
def rendered_frame_jpeg(ctx: Context) -> str:
    inst = ctx.data.multiframe
    ctx.require_uploaded()
    img = _image(ctx, f"{inst.path}/frames/2/rendered", "image/jpeg", "jpeg")
    return f"{img.width}x{img.height}"


@check("rendered.thumbnail", "PS3.18 10.4.1.1.4", "Instance thumbnail (optional)")
def rendered_thumbnail(ctx: Context) -> str:
    img = _rendered(ctx, "jpeg", "thumbnail")
    return f"{img.width}x{img.height}"


@check("rendered.accept-parameter", "PS3.18 8.3.3.1", "accept=image/png query parameter")
def rendered_accept_query_parameter(ctx: Context) -> str:
    """PS3.18 8.3.3.1: the ``accept`` query parameter selects the media type."""
    inst = ctx.instance()
    img = _image(ctx, f"{inst.path}/rendered?accept=image/png", None, "png")
    return f"{img.width}x{img.height} PNG without Accept header"


@check("rendered.viewport", "PS3.18 8.3.5.1.3", "viewport=32,32 scales the image")
def rendered_viewport(ctx: Context) -> str:
    img = _rendered(ctx, "png", query="?viewport=32,32")
    ensure(max(img.size) <= 32, f"{img.width}x{img.height} does not fit a 32x32 viewport")
    ensure(max(img.size) == 32, f"{img.width}x{img.height} not scaled to the viewport")
    return f"{img.width}x{img.height}"


@check("rendered.window", "PS3.18 8.3.5.1.4", "window=center,width,function changes rendering")
def rendered_window(ctx: Context) -> str:
    narrow = _rendered(ctx, "png", query="?window=0,100,linear").convert("L")
    wide = _rendered(ctx, "png", query="?window=1000,4000,linear").convert("L")
    if narrow.tobytes() == wide.tobytes():
        unsupported("window parameter accepted but ignored (identical images)")
    return "distinct renderings for two windows"
