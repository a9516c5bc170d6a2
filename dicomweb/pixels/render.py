"""Rendered resources (PS3.18 8.3.5 / 9.5): decoded pixels to JPEG, PNG or GIF.

Grayscale pipeline (PS3.3 C.11, PS3.4 N.2): Modality LUT (Rescale Slope/Intercept,
C.11.1) -> VOI LUT window (request window, else the dataset's first Window Center /
Width, else the data min/max) with VOI LUT Function LINEAR (C.11.2.1.2.1),
LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID (C.11.2.1.3.1) -> MONOCHROME1 inversion
(C.7.6.3.1.2). PALETTE COLOR is mapped through the Palette Color LUTs (C.7.6.3.1.5)
when their data is available, otherwise rendered as grayscale. YBR_FULL(_422) colour is
converted to RGB; samples wider than 8 bits are scaled to 8 bits. The viewport
(PS3.18 8.3.5.1.3) crops the source region and scales it to fit ``vw x vh`` keeping the
aspect ratio; the output has the scaled size (no letterbox).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.pixels import convert_color_space

from .description import PaletteLUT, PixelDescription
from .errors import RenderError
from .voi import (  # re-exported: the rendering API of this package
    BLOCK_ELEMENTS,
    MAX_LUT_ENTRIES,
    VOI_FUNCTIONS,
    Window,
    WindowSpec,
    apply_window,
    blocks,
    default_window,
    gray8_through_lut,
    modality_values,
    to_integers,
    window_through_lut,
)

__all__ = [
    "BLOCK_ELEMENTS", "MAX_LUT_ENTRIES", "VOI_FUNCTIONS", "Viewport", "Window", "WindowSpec",
    "apply_viewport", "apply_window", "blocks", "default_window", "encode_image",
    "modality_values", "render_array", "render_float_image", "render_frame", "thumbnail",
    "to_integers", "window_through_lut",
]

RENDER_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
DEFAULT_JPEG_QUALITY = 90
ViewportSpec = Sequence[float | None]


@dataclass(frozen=True)
class Viewport:
    """PS3.18 8.3.5.1.3 ``viewport=vw,vh[,sx,sy,sw,sh]``; negative sw/sh flip."""

    vw: int
    vh: int
    sx: float = 0.0
    sy: float = 0.0
    sw: float | None = None
    sh: float | None = None

    @classmethod
    def of(cls, spec: ViewportSpec | Viewport) -> Viewport:
        if isinstance(spec, Viewport):
            return spec
        values = list(spec) + [None] * (6 - len(spec))
        if len(spec) not in (2, 4, 6) or values[0] is None or values[1] is None:
            raise RenderError(f"viewport needs vw,vh[,sx,sy[,sw,sh]]: {spec!r}")
        vw, vh = int(values[0]), int(values[1])
        if vw <= 0 or vh <= 0:
            raise RenderError("viewport width and height must be positive")
        return cls(vw, vh, float(values[2] or 0), float(values[3] or 0), values[4], values[5])


# ---------------------------------------------------------------------------------------
# Pipeline steps
# ---------------------------------------------------------------------------------------
def apply_palette(pixels: np.ndarray, desc: PixelDescription) -> np.ndarray:
    """PALETTE COLOR to RGB float32 in [0, 255] (PS3.3 C.7.6.3.1.5/6)."""
    luts = (desc.red_palette, desc.green_palette, desc.blue_palette)
    channels = [_lut_channel(pixels, lut) for lut in luts if lut is not None]
    if len(channels) != 3:
        raise RenderError("palette colour LUT data is not available")
    return np.stack(channels, axis=-1)


def _lut_channel(pixels: np.ndarray, lut: PaletteLUT) -> np.ndarray:
    if lut.data is None:
        raise RenderError("palette colour LUT data is not available")
    dtype = np.dtype("<u1") if lut.bits == 8 else np.dtype("<u2")
    table = np.frombuffer(lut.data[: len(lut.data) - len(lut.data) % dtype.itemsize], dtype)
    if table.size == 0:
        raise RenderError("empty palette colour LUT")
    table = table[: lut.entries]
    index = np.clip(pixels.astype(np.int64) - lut.first_mapped, 0, table.size - 1)
    scale = 255.0 / 65535.0 if lut.bits != 8 else 1.0
    return table[index].astype(np.float32) * np.float32(scale)


def to_interleaved(pixels: np.ndarray, desc: PixelDescription) -> np.ndarray:
    """Colour data shaped (samples, rows, cols) (planar) to (rows, cols, samples)."""
    s = desc.samples_per_pixel
    if pixels.ndim == 3 and pixels.shape[0] == s and pixels.shape[-1] != s:
        return np.moveaxis(pixels, 0, -1)
    return pixels


def color_values(
    pixels: np.ndarray, desc: PixelDescription, photometric: str | None = None
) -> np.ndarray:
    """Colour pixels as RGB float32 in [0, 255]."""
    rgb = to_interleaved(pixels, desc)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise RenderError(f"colour pixels must be (rows, cols, 3), got {pixels.shape}")
    photometric = photometric or desc.photometric_interpretation
    if desc.bits_stored > 8:
        rgb = rgb.astype(np.float32) * np.float32(255.0 / (2**desc.bits_stored - 1))
    if photometric in ("YBR_FULL", "YBR_FULL_422"):  # PS3.3 C.7.6.3.1.2
        rgb8 = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        rgb = convert_color_space(rgb8, "YBR_FULL", "RGB")
    return rgb.astype(np.float32, copy=False)


def apply_viewport(image: np.ndarray, viewport: Viewport | None) -> np.ndarray:
    """Crop the source region and scale it to fit the viewport (aspect kept)."""
    if viewport is None:
        return image
    rows, cols = image.shape[:2]
    sw = viewport.sw if viewport.sw is not None else cols - viewport.sx
    sh = viewport.sh if viewport.sh is not None else rows - viewport.sy
    x0, y0 = int(round(viewport.sx)), int(round(viewport.sy))
    x1, y1 = int(round(viewport.sx + abs(sw))), int(round(viewport.sy + abs(sh)))
    x0, x1 = max(0, min(x0, cols)), max(0, min(x1, cols))
    y0, y1 = max(0, min(y0, rows)), max(0, min(y1, rows))
    if x1 <= x0 or y1 <= y0:
        raise RenderError("viewport source region is outside the image")
    region = image[y0:y1, x0:x1]
    if sw < 0:
        region = region[:, ::-1]
    if sh < 0:
        region = region[::-1]
    height, width = region.shape[:2]
    scale = min(viewport.vw / width, viewport.vh / height)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return _resize(region, size)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return np.ascontiguousarray(image)
    downscale = size[0] < image.shape[1]
    resample = Image.Resampling.LANCZOS if downscale else Image.Resampling.BILINEAR
    if image.ndim == 2:
        return _resize_plane(image, size, resample)
    out = np.empty((size[1], size[0], image.shape[2]), dtype=np.float32)
    for i in range(image.shape[2]):  # one resized plane at a time, into the output
        out[..., i] = _resize_plane(image[..., i], size, resample)
    return out


def _resize_plane(plane: np.ndarray, size: tuple[int, int], resample: Image.Resampling
                  ) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(
        size, resample)
    return np.asarray(resized)


def encode_image(
    image: np.ndarray,
    media_type: str = "image/jpeg",
    *,
    quality: int | None = None,
    bit_depth: int = 8,
) -> bytes:
    """Encode a float image in [0, 255] (or [0, 65535] when ``bit_depth`` is 16), or a uint8
    image as it is."""
    media_type = media_type.split(";", 1)[0].strip().lower()
    if media_type not in RENDER_MEDIA_TYPES:
        raise RenderError(f"unsupported rendered media type {media_type!r}")
    if bit_depth not in (8, 16):
        raise RenderError("bit depth must be 8 or 16")
    if image.dtype == np.uint8 and bit_depth == 8:  # already the bytes (gray8_through_lut)
        pil = Image.fromarray(image)
    elif bit_depth == 16 and media_type == "image/png" and image.ndim == 2:
        pil = Image.fromarray(to_integers(image, 1.0, 65535, np.uint16))
    else:
        pil = Image.fromarray(to_integers(image, 257.0 if bit_depth == 16 else 1.0, 255,
                                          np.uint8))
    out = io.BytesIO()
    if media_type == "image/jpeg":
        q = DEFAULT_JPEG_QUALITY if quality is None else int(quality)
        if not 1 <= q <= 100:
            raise RenderError("quality must be within 1..100")
        pil.save(out, format="JPEG", quality=q)
    elif media_type == "image/png":
        pil.save(out, format="PNG")
    else:
        if pil.mode == "RGB":
            pil = pil.quantize(colors=256)
        pil.save(out, format="GIF")
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------
def render_frame(
    pixels: np.ndarray,
    desc: PixelDescription,
    *,
    media_type: str = "image/jpeg",
    window: WindowSpec | Window | None = None,
    viewport: ViewportSpec | Viewport | None = None,
    quality: int | None = None,
    bit_depth: int = 8,
    photometric: str | None = None,
) -> bytes:
    """Render one decoded frame (as returned by :func:`codecs.decode_frame`).

    ``photometric`` is the photometric interpretation of ``pixels`` when it differs
    from ``desc`` (e.g. ``"RGB"`` after decoding a YBR JPEG). ``window`` is
    ``(center, width[, function])``. ``bit_depth=16`` gives 16-bit grayscale PNG.
    For a multi-frame object pass ``desc.for_frame(i)`` to use per-frame values.
    """
    image = None
    if viewport is None and bit_depth == 8:
        image = gray8_image(pixels, desc, window, photometric)
    if image is None:
        image = render_array(pixels, desc, window=window, viewport=viewport,
                             bit_depth=bit_depth, photometric=photometric)
    return encode_image(
        image,
        media_type,
        quality=quality,
        bit_depth=bit_depth,
    )


def gray8_image(
    pixels: np.ndarray, desc: PixelDescription, window: WindowSpec | Window | None,
    photometric: str | None,
) -> np.ndarray | None:
    """The 8-bit image of a whole grayscale integer frame (the common rendered request), or
    None when `render_array` must make it (colour, palette, float samples)."""
    photometric = (photometric or desc.photometric_interpretation).upper()
    if desc.samples_per_pixel != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2") or (
            not pixels.size):
        return None
    return gray8_through_lut(pixels, desc, window, invert=photometric == "MONOCHROME1")


def render_array(
    pixels: np.ndarray,
    desc: PixelDescription,
    *,
    window: WindowSpec | Window | None = None,
    viewport: ViewportSpec | Viewport | None = None,
    bit_depth: int = 8,
    photometric: str | None = None,
) -> np.ndarray:
    """The presentation values (float32, 0..255 or 0..65535) before image encoding."""
    photometric = (photometric or desc.photometric_interpretation).upper()
    port = Viewport.of(viewport) if viewport is not None else None
    y_max = 65535.0 if bit_depth == 16 else 255.0
    if desc.samples_per_pixel > 1 or (pixels.ndim == 3 and photometric != "PALETTE COLOR"):
        rgb = apply_viewport(color_values(pixels, desc, photometric), port)
        return rgb if y_max == 255.0 else rgb * np.float32(y_max / 255.0)
    if photometric == "PALETTE COLOR" and desc.has_palette_data:
        rgb = apply_viewport(apply_palette(pixels, desc), port)
        return rgb if y_max == 255.0 else rgb * np.float32(y_max / 255.0)
    if port is None and pixels.ndim == 2 and pixels.dtype.kind in "ui" and pixels.size:
        out = window_through_lut(pixels, desc, window, y_max)
    else:
        values = modality_values(pixels, desc)
        voi = Window.of(window) if window is not None else default_window(values, desc)
        values = apply_viewport(values, port)
        out = apply_window(values, voi, y_max)
    if photometric == "MONOCHROME1":
        np.subtract(np.float32(y_max), out, out=out)
    return out


def render_float_image(
    values: np.ndarray,
    center: float | None = None,
    width: float | None = None,
    *,
    function: str = "LINEAR",
    media_type: str = "image/jpeg",
    viewport: ViewportSpec | Viewport | None = None,
    quality: int | None = None,
    bit_depth: int = 8,
    invert: bool = False,
) -> bytes:
    """Render float values already in modality units (e.g. an MPR reformat).

    Without ``center``/``width`` the finite min..max is used. NaN (outside the volume)
    renders black (0, or white with ``invert``).
    """
    values = np.asarray(values, dtype=np.float32)
    if center is None or width is None:
        voi = default_window(values)
    else:
        voi = Window.of((center, width, function))
    y_max = 65535.0 if bit_depth == 16 else 255.0
    port = Viewport.of(viewport) if viewport is not None else None
    if port is not None:
        values = apply_viewport(values, port)
    out = apply_window(values, voi, y_max)
    if invert:
        out = np.float32(y_max) - out
    return encode_image(out, media_type, quality=quality, bit_depth=bit_depth)


def thumbnail(
    pixels: np.ndarray,
    desc: PixelDescription,
    *,
    size: int = 128,
    quality: int | None = 80,
    photometric: str | None = None,
) -> bytes:
    """A small JPEG fitted into ``size x size`` (default window)."""
    rows, cols = pixels.shape[:2]
    scale = min(1.0, size / max(rows, cols))
    vw, vh = max(1, round(cols * scale)), max(1, round(rows * scale))
    return render_frame(
        pixels,
        desc,
        media_type="image/jpeg",
        viewport=(vw, vh),
        quality=quality,
        photometric=photometric,
    )
