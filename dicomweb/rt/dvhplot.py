"""Cumulative DVHs drawn as pictures: SVG (text) and PNG (Pillow).

One plot: dose on the x axis in Gy, volume on the y axis in % of each ROI or in cm³, one
curve per ROI in its ROI Display Color (3006,002A) — a fixed palette for ROIs without one —
and a legend with the ROI names. :func:`layout` is the whole geometry (the plot rectangle
and the axis ranges), so a reader of the picture can map any pixel back to (Gy, volume); the
SVG carries it as ``data-*`` attributes of its root.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 800, 500
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 24, 20, 56
MAX_POINTS = 1000  # per curve: a 0.01 Gy DVH of 70 Gy has 7,000 bins
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207), (140, 86, 75), (227, 119, 194))
BACKGROUND, INK, GRID = (255, 255, 255), (0, 0, 0), (221, 221, 221)


@dataclass(frozen=True)
class Curve:
    """One ROI's cumulative DVH: volume (in the plot's unit) receiving at least each dose."""

    label: str
    colour: tuple[int, int, int]
    dose_gy: np.ndarray
    volume: np.ndarray


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_max: float  # Gy at the right edge of the plot rectangle
    y_max: float  # volume at its top
    x_step: float
    y_step: float

    def to_pixel(self, dose: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.left + np.asarray(dose) / self.x_max * (self.right - self.left)
        y = self.bottom - np.asarray(volume) / self.y_max * (self.bottom - self.top)
        return x, y

    def to_data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dose = (np.asarray(x) - self.left) / (self.right - self.left) * self.x_max
        volume = (self.bottom - np.asarray(y)) / (self.bottom - self.top) * self.y_max
        return dose, volume


def nice_step(span: float, target_ticks: int = 8) -> float:
    """A tick step of 1, 2, 2.5 or 5 × 10ⁿ giving about ``target_ticks`` intervals."""
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def layout(curves: list[Curve], volume_unit: str) -> Layout:
    d_max = max((float(c.dose_gy[-1]) for c in curves if c.dose_gy.size), default=1.0)
    x_step = nice_step(max(d_max, 1e-3))
    x_max = max(x_step, math.ceil(d_max / x_step - 1e-9) * x_step)
    if volume_unit == "pct":
        y_max, y_step = 100.0, 10.0
    else:
        v_max = max((float(c.volume.max()) for c in curves if c.volume.size), default=1.0)
        y_step = nice_step(max(v_max, 1e-3), 5)
        y_max = max(y_step, math.ceil(v_max / y_step - 1e-9) * y_step)
    return Layout(WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_RIGHT,
                  HEIGHT - MARGIN_BOTTOM, x_max, y_max, x_step, y_step)


def colour_of(index: int, display_colour: tuple[int, int, int] | None) -> tuple[int, int, int]:
    return tuple(display_colour) if display_colour else PALETTE[index % len(PALETTE)]


def _thin(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points of the curve, the first and last kept; then the step down
    to zero volume just past the last bin."""
    n = curve.dose_gy.size
    keep = np.unique(np.r_[np.linspace(0, n - 1, min(n, MAX_POINTS)).astype(int), n - 1]) if n \
        else np.zeros(0, dtype=int)
    dose, volume = curve.dose_gy[keep], curve.volume[keep]
    if n:
        dose, volume = np.r_[dose, dose[-1]], np.r_[volume, 0.0]
    return dose, volume


def _tick_text(value: float) -> str:
    return f"{value:g}"


def _axis_titles(volume_unit: str) -> tuple[str, str]:
    return "Dose (Gy)", "Volume (%)" if volume_unit == "pct" else "Volume (cm³)"


def _hex(colour: tuple[int, int, int]) -> str:
    r, g, b = colour
    return f"#{r:02x}{g:02x}{b:02x}"


def to_svg(curves: list[Curve], volume_unit: str) -> bytes:
    g = layout(curves, volume_unit)
    x_title, y_title = _axis_titles(volume_unit)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{g.width}" height="{g.height}" '
           f'viewBox="0 0 {g.width} {g.height}" font-family="sans-serif" font-size="13" '
           f'data-plot="{g.left} {g.top} {g.right} {g.bottom}" data-x-max="{g.x_max:g}" '
           f'data-y-max="{g.y_max:g}" data-volume-unit="{volume_unit}">',
           f'<rect width="{g.width}" height="{g.height}" fill="{_hex(BACKGROUND)}"/>']
    for tick in np.arange(0, g.x_max + g.x_step / 2, g.x_step):
        x = g.to_pixel(tick, 0)[0]
        out.append(f'<line x1="{x:.2f}" y1="{g.top}" x2="{x:.2f}" y2="{g.bottom}" '
                   f'stroke="{_hex(GRID)}"/>')
        out.append(f'<text x="{x:.2f}" y="{g.bottom + 18}" text-anchor="middle">'
                   f'{_tick_text(tick)}</text>')
    for tick in np.arange(0, g.y_max + g.y_step / 2, g.y_step):
        y = g.to_pixel(0, tick)[1]
        out.append(f'<line x1="{g.left}" y1="{y:.2f}" x2="{g.right}" y2="{y:.2f}" '
                   f'stroke="{_hex(GRID)}"/>')
        out.append(f'<text x="{g.left - 6}" y="{y + 4:.2f}" text-anchor="end">'
                   f'{_tick_text(tick)}</text>')
    out.append(f'<rect x="{g.left}" y="{g.top}" width="{g.right - g.left}" '
               f'height="{g.bottom - g.top}" fill="none" stroke="{_hex(INK)}"/>')
    out.append(f'<text x="{(g.left + g.right) / 2}" y="{g.height - 12}" '
               f'text-anchor="middle">{escape(x_title)}</text>')
    out.append(f'<text transform="translate(16 {(g.top + g.bottom) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_title)}</text>')
    for i, curve in enumerate(curves):
        x, y = g.to_pixel(*_thin(curve))
        points = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(x, y, strict=True))
        out.append(f'<polyline data-roi="{escape(curve.label, {chr(34): "&quot;"})}" '
                   f'fill="none" stroke="{_hex(curve.colour)}" stroke-width="2" '
                   f'points="{points}"/>')
        ly = g.top + 16 + 18 * i
        out.append(f'<line x1="{g.right - 170}" y1="{ly - 4}" x2="{g.right - 146}" '
                   f'y2="{ly - 4}" stroke="{_hex(curve.colour)}" stroke-width="3"/>')
        out.append(f'<text x="{g.right - 140}" y="{ly}">{escape(curve.label)}</text>')
    out.append("</svg>")
    return "\n".join(out).encode("utf-8")


def to_png(curves: list[Curve], volume_unit: str) -> bytes:
    g = layout(curves, volume_unit)
    x_title, y_title = _axis_titles(volume_unit)
    image = Image.new("RGB", (g.width, g.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    for tick in np.arange(0, g.x_max + g.x_step / 2, g.x_step):
        x = float(g.to_pixel(tick, 0)[0])
        draw.line([(x, g.top), (x, g.bottom)], fill=GRID)
        draw.text((x, g.bottom + 6), _tick_text(tick), fill=INK, font=font, anchor="mt")
    for tick in np.arange(0, g.y_max + g.y_step / 2, g.y_step):
        y = float(g.to_pixel(0, tick)[1])
        draw.line([(g.left, y), (g.right, y)], fill=GRID)
        draw.text((g.left - 6, y), _tick_text(tick), fill=INK, font=font, anchor="rm")
    draw.rectangle([g.left, g.top, g.right, g.bottom], outline=INK)
    draw.text(((g.left + g.right) / 2, g.height - 12), x_title, fill=INK, font=font,
              anchor="ms")
    label = Image.new("RGB", (int(g.bottom - g.top), 18), BACKGROUND)
    ImageDraw.Draw(label).text((label.width / 2, 9), y_title, fill=INK, font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (4, int(g.top)))
    for i, curve in enumerate(curves):
        x, y = g.to_pixel(*_thin(curve))
        draw.line(list(zip(x.tolist(), y.tolist(), strict=True)), fill=curve.colour, width=2)
        ly = g.top + 16 + 18 * i
        draw.line([(g.right - 170, ly - 4), (g.right - 146, ly - 4)], fill=curve.colour,
                  width=3)
        draw.text((g.right - 140, ly - 4), curve.label, fill=INK, font=font, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()
