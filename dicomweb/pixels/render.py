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

RENDER_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
DEFAULT_JPEG_QUALITY = 90
WindowSpec = tuple[float, float, str] | tuple[float, float]
ViewportSpec = Sequence[float | None]


@dataclass(frozen=True)
class Window:
    """A VOI window; ``function`` is the VOI LUT Function (PS3.3 C.11.2.1.3)."""

    center: float
    width: float
    function: str = "LINEAR"

    @classmethod
    def of(cls, spec: WindowSpec | Window) -> Window:
        if isinstance(spec, Window):
            window = spec
        else:
            function = str(spec[2]) if len(spec) > 2 else "LINEAR"
            window = cls(float(spec[0]), float(spec[1]), function.upper().strip())
        if window.function not in VOI_FUNCTIONS:
            raise RenderError(f"unknown VOI LUT function {window.function!r}")
        minimum = 1.0 if window.function == "LINEAR" else 0.0
        if not window.width >= minimum or (window.width == 0 and window.function != "LINEAR"):
            raise RenderError(f"window width {window.width} invalid for {window.function}")
        return window


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
def modality_values(pixels: np.ndarray, desc: PixelDescription) -> np.ndarray:
    """Stored values through the linear Modality LUT (PS3.3 C.11.1), as float32."""
    values = pixels.astype(np.float32, copy=True)
    slope = desc.rescale_slope if desc.rescale_slope is not None else 1.0
    intercept = desc.rescale_intercept if desc.rescale_intercept is not None else 0.0
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def default_window(values: np.ndarray, desc: PixelDescription | None = None) -> Window:
    """The dataset's first window, else one spanning the data (min..max, LINEAR_EXACT)."""
    function = (desc.voi_lut_function if desc else None) or "LINEAR"
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    if desc and desc.window_centers and desc.window_widths:
        center, width = desc.window_centers[0], desc.window_widths[0]
        if width >= (1.0 if function == "LINEAR" else 0.0) and width > 0:
            return Window(center, width, function)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Window(0.5, 1.0, "LINEAR_EXACT")
    low, high = float(finite.min()), float(finite.max())
    return Window((low + high) / 2.0, max(high - low, 1e-6), "LINEAR_EXACT")


#: Elements per block when a large image goes through float64 arithmetic: the temporaries
#: of one block, not of the whole image, are held at once.
BLOCK_ELEMENTS = 1 << 20


def blocks(array: np.ndarray) -> list[slice]:
    """Row slices of ``array`` of about BLOCK_ELEMENTS elements each."""
    per_row = max(int(np.prod(array.shape[1:])), 1) if array.ndim > 1 else max(array.size, 1)
    rows = max(1, BLOCK_ELEMENTS // per_row)
    count = array.shape[0] if array.ndim else 1
    return [slice(start, start + rows) for start in range(0, count, rows)]


def apply_window(values: np.ndarray, window: Window, y_max: float = 255.0) -> np.ndarray:
    """VOI LUT function output in ``[0, y_max]`` as float32 (NaN maps to 0), computed in
    float64 a block of rows at a time."""
    if values.ndim == 0:
        return _window_block(np.asarray(values), window, y_max)
    out = np.empty(values.shape, dtype=np.float32)
    for rows in blocks(values):
        out[rows] = _window_block(values[rows], window, y_max)
    return out


def _window_block(values: np.ndarray, window: Window, y_max: float) -> np.ndarray:
    x = values.astype(np.float64, copy=False)
    c, w = window.center, window.width
    if window.function == "LINEAR":  # C.11.2.1.2.1
        y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) if w > 1 else (x > c - 0.5).astype(np.float64)
        y = np.where(x <= c - 0.5 - (w - 1.0) / 2.0, 0.0, y)
        y = np.where(x > c - 0.5 + (w - 1.0) / 2.0, 1.0, y)
    elif window.function == "LINEAR_EXACT":  # C.11.2.1.3.2
        y = (x - c) / w + 0.5
    else:  # SIGMOID, C.11.2.1.3.1
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    y = np.clip(y, 0.0, 1.0) * y_max
    return np.nan_to_num(y, nan=0.0).astype(np.float32)


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
    """Encode a float image in [0, 255] (or [0, 65535] when ``bit_depth`` is 16)."""
    media_type = media_type.split(";", 1)[0].strip().lower()
    if media_type not in RENDER_MEDIA_TYPES:
        raise RenderError(f"unsupported rendered media type {media_type!r}")
    if bit_depth not in (8, 16):
        raise RenderError("bit depth must be 8 or 16")
    if bit_depth == 16 and media_type == "image/png" and image.ndim == 2:
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


def to_integers(image: np.ndarray, divisor: float, top: int, dtype: type) -> np.ndarray:
    """``rint(image / divisor)`` clipped to ``0..top``, a block of rows at a time."""
    if image.ndim == 0:
        image = image.reshape(1)
    out = np.empty(image.shape, dtype=dtype)
    for rows in blocks(image):
        block = image[rows] / divisor if divisor != 1.0 else image[rows]
        out[rows] = np.clip(np.rint(block), 0, top)
    return out


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
    return encode_image(
        render_array(
            pixels,
            desc,
            window=window,
            viewport=viewport,
            bit_depth=bit_depth,
            photometric=photometric,
        ),
        media_type,
        quality=quality,
        bit_depth=bit_depth,
    )


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


#: Integer frames spanning at most this many values are windowed through a lookup table.
MAX_LUT_ENTRIES = 1 << 17


def window_through_lut(
    pixels: np.ndarray, desc: PixelDescription, window: WindowSpec | Window | None, y_max: float
) -> np.ndarray:
    """`apply_window(modality_values(pixels))` for integer pixels, computed once per stored
    value between the frame's minimum and maximum and then looked up: the same float32
    results, without float64 arithmetic on every pixel (a 512×512 CT: 3 → 1 ms)."""
    low, high = int(pixels.min()), int(pixels.max())
    if high - low >= MAX_LUT_ENTRIES:
        values = modality_values(pixels, desc)
        voi = Window.of(window) if window is not None else default_window(values, desc)
        return apply_window(values, voi, y_max)
    domain = modality_values(np.arange(low, high + 1, dtype=np.int64), desc)
    # The domain holds the frame's extremes, so a default window from it equals the frame's.
    voi = Window.of(window) if window is not None else default_window(domain, desc)
    lut = apply_window(domain, voi, y_max)
    return lut[pixels.astype(np.intp, copy=False) - low]


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
