"""Rendered images compared with independent numpy computations of PS3.3 C.11."""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from dicomweb.pixels.codecs import decode_frame
from dicomweb.pixels.description import PixelDescription
from dicomweb.pixels.errors import RenderError
from dicomweb.pixels.render import render_float_image, render_frame, thumbnail


def _load(name: str) -> tuple[pydicom.Dataset, PixelDescription]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available offline")
    ds = pydicom.dcmread(path)
    return ds, PixelDescription.from_dataset(ds)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def linear(x: np.ndarray, c: float, w: float, y_max: float = 255.0) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out with explicit branches."""
    out = np.empty_like(x, dtype=np.float64)
    low = x <= c - 0.5 - (w - 1) / 2
    high = x > c - 0.5 + (w - 1) / 2
    mid = ~(low | high)
    out[low] = 0
    out[high] = y_max
    out[mid] = ((x[mid] - (c - 0.5)) / (w - 1) + 0.5) * y_max
    return out


def linear_exact(x: np.ndarray, c: float, w: float, y_max: float = 255.0) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2."""
    out = ((x - c) / w + 0.5) * y_max
    out[x <= c - w / 2] = 0
    out[x > c + w / 2] = y_max
    return out


def _ct() -> tuple[np.ndarray, PixelDescription, np.ndarray]:
    ds, desc = _load("CT_small.dcm")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return ds.pixel_array, desc, hu


def test_ct_default_window_is_min_max() -> None:
    pixels, desc, hu = _ct()
    assert not desc.window_centers  # CT_small has no window: data range is used
    got = _png(render_frame(pixels, desc, media_type="image/png"))
    lo, hi = hu.min(), hu.max()
    expected = np.rint(linear_exact(hu, (lo + hi) / 2, hi - lo))
    assert np.abs(got.astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (50.0, 1.0)])
def test_ct_request_window_linear(center: float, width: float) -> None:
    pixels, desc, hu = _ct()
    got = _png(render_frame(pixels, desc, media_type="image/png", window=(center, width)))
    expected = np.rint(linear(hu, center, width))
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_dataset_window_and_function_are_used() -> None:
    pixels, desc, hu = _ct()
    desc = dataclasses.replace(
        desc, window_centers=(100.0, 0.0), window_widths=(300.0, 10.0), voi_lut_function=None
    )
    got = _png(render_frame(pixels, desc, media_type="image/png"))
    assert np.abs(got.astype(int) - np.rint(linear(hu, 100, 300))).max() <= 1
    exact = dataclasses.replace(desc, voi_lut_function="LINEAR_EXACT")
    got = _png(render_frame(pixels, exact, media_type="image/png"))
    assert np.abs(got.astype(int) - np.rint(linear_exact(hu, 100, 300))).max() <= 1


def test_sigmoid() -> None:
    pixels, desc, hu = _ct()
    got = _png(render_frame(pixels, desc, media_type="image/png", window=(40, 400, "SIGMOID")))
    expected = np.rint(255.0 / (1 + np.exp(-4 * (hu - 40) / 400)))
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_monochrome1_inverts() -> None:
    pixels, desc, hu = _ct()
    mono1 = dataclasses.replace(desc, photometric_interpretation="MONOCHROME1")
    got = _png(render_frame(pixels, mono1, media_type="image/png", window=(40, 400)))
    expected = 255 - np.rint(linear(hu, 40, 400))
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_signed_data() -> None:
    pixels = np.array([[-2000, -1000, -100], [0, 100, 2000]], dtype=np.int16)
    desc = PixelDescription(rows=2, columns=3, pixel_representation=1, rescale_slope=2.0)
    got = _png(render_frame(pixels, desc, media_type="image/png", window=(0, 1000)))
    expected = np.rint(linear(pixels * 2.0, 0, 1000))
    np.testing.assert_array_equal(got, expected)


def test_png_16_bit() -> None:
    pixels, desc, hu = _ct()
    data = render_frame(pixels, desc, media_type="image/png", window=(40, 400), bit_depth=16)
    image = Image.open(io.BytesIO(data))
    assert image.mode.startswith("I")
    got = np.asarray(image).astype(np.int64)
    expected = np.rint(linear(hu, 40, 400, 65535.0))
    assert np.abs(got - expected).max() <= 1


def test_rgb_passthrough() -> None:
    ds, desc = _load("examples_rgb_color.dcm")
    got = _png(render_frame(ds.pixel_array, desc, media_type="image/png"))
    np.testing.assert_array_equal(got, ds.pixel_array)


def test_planar_rgb_array_accepted() -> None:
    ds, desc = _load("examples_rgb_color.dcm")
    planar = np.moveaxis(ds.pixel_array, -1, 0)
    got = _png(render_frame(planar, desc, media_type="image/png"))
    np.testing.assert_array_equal(got, ds.pixel_array)


@pytest.mark.parametrize("name", ["SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_ybr_converted_to_rgb(name: str) -> None:
    ds, desc = _load(name)
    ts = ds.file_meta.TransferSyntaxUID
    frame = ds.PixelData
    if ts.is_compressed:
        frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ybr = decode_frame(frame, ts, desc, as_rgb=False)
    rgb = decode_frame(frame, ts, desc)
    from_ybr = _png(render_frame(ybr, desc, media_type="image/png"))
    from_rgb = _png(render_frame(rgb, desc, media_type="image/png", photometric="RGB"))
    assert np.abs(from_ybr.astype(int) - from_rgb).max() <= 1
    assert np.abs(from_rgb.astype(int) - ds.pixel_array).max() <= 1


def test_palette_color() -> None:
    ds, desc = _load("examples_palette.dcm")
    assert desc.has_palette_data
    got = _png(render_frame(ds.pixel_array, desc, media_type="image/png"))
    expected = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 65535 * 255
    assert got.shape == expected.shape
    assert np.abs(got - np.rint(expected)).max() <= 1


def test_palette_without_lut_data_degrades_to_grayscale() -> None:
    ds, _ = _load("examples_palette.dcm")
    json_dict = ds.to_json_dict(bulk_data_threshold=16, bulk_data_element_handler=lambda e: "u")
    desc = PixelDescription.from_dicom_json(json_dict)
    assert desc.red_palette is not None and not desc.has_palette_data
    got = _png(render_frame(ds.pixel_array, desc, media_type="image/png"))
    assert got.ndim == 2


def test_viewport_scales_keeping_aspect() -> None:
    pixels, desc, _ = _ct()
    image = Image.open(io.BytesIO(render_frame(pixels, desc, viewport=(64, 32))))
    assert image.size == (32, 32)
    assert image.format == "JPEG"


def test_viewport_crop_and_flip() -> None:
    pixels = np.zeros((100, 200), dtype=np.uint16)
    pixels[:, 100:] = 1000
    desc = PixelDescription(rows=100, columns=200)
    window = (500, 1000)
    right = _png(
        render_frame(
            pixels, desc, media_type="image/png", window=window, viewport=(50, 50, 120, 10, 50, 50)
        )
    )
    assert right.shape == (50, 50) and right.min() >= 254
    both = _png(
        render_frame(
            pixels, desc, media_type="image/png", window=window, viewport=(40, 20, 0, 0, 200, 100)
        )
    )
    assert both.shape == (20, 40)
    assert both[:, :15].max() <= 1 and both[:, 25:].min() >= 254
    flipped = _png(
        render_frame(
            pixels, desc, media_type="image/png", window=window, viewport=(40, 20, 0, 0, -200, 100)
        )
    )
    assert flipped[:, :15].min() >= 254 and flipped[:, 25:].max() <= 1


def test_jpeg_quality_and_gif() -> None:
    pixels, desc, _ = _ct()
    low = render_frame(pixels, desc, quality=10)
    high = render_frame(pixels, desc, quality=95)
    assert len(low) < len(high)
    gif = Image.open(io.BytesIO(render_frame(pixels, desc, media_type="image/gif")))
    assert gif.format == "GIF" and gif.size == (128, 128)
    ds, rgb_desc = _load("examples_rgb_color.dcm")
    assert render_frame(ds.pixel_array, rgb_desc, media_type="image/gif")[:3] == b"GIF"


def test_thumbnail() -> None:
    ds, desc = _load("examples_rgb_color.dcm")
    image = Image.open(io.BytesIO(thumbnail(ds.pixel_array, desc, size=64)))
    assert image.format == "JPEG" and max(image.size) == 64


def test_render_float_image() -> None:
    values = np.array([[np.nan, -100.0], [0.0, 100.0]], dtype=np.float32)
    got = _png(render_float_image(values, 0.0, 201.0, media_type="image/png"))
    expected = linear(np.nan_to_num(values, nan=-1e9).astype(np.float64), 0, 201)
    np.testing.assert_array_equal(got, np.rint(expected))
    auto = _png(render_float_image(values, media_type="image/png"))
    assert auto[1, 0] in (127, 128) and auto[1, 1] == 255 and auto[0, 0] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"media_type": "image/bmp"},
        {"window": (40, 0)},
        {"window": (40, 400, "CUBIC")},
        {"viewport": (10,)},
        {"viewport": (10, 10, 500, 500, 10, 10)},
        {"quality": 0},
        {"bit_depth": 12},
    ],
)
def test_render_errors(kwargs) -> None:
    pixels, desc, _ = _ct()
    with pytest.raises(RenderError):
        render_frame(pixels, desc, **kwargs)
