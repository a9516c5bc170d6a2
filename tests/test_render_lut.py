"""The lookup-table windowing of integer frames gives exactly the per-pixel pipeline's values
(pixels/render.py `window_through_lut` against `apply_window(modality_values(...))`)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomweb.pixels import render
from dicomweb.pixels.description import PixelDescription

CASES = [
    (np.uint16, 12, None, None, (), (), None),
    (np.uint16, 12, 1.0, -1024.0, (40.0,), (400.0,), None),
    (np.int16, 16, 2.5, 10.0, (100.0,), (1.0,), "LINEAR"),
    (np.int16, 16, -1.0, 0.0, (0.0,), (2000.0,), "LINEAR_EXACT"),
    (np.uint8, 8, None, None, (128.0,), (50.0,), "SIGMOID"),
]


@pytest.mark.parametrize(("dtype", "bits", "slope", "intercept", "centers", "widths", "fn"), CASES)
def test_lut_equals_per_pixel_window(dtype, bits, slope, intercept, centers, widths, fn) -> None:
    rng = np.random.default_rng(bits)
    info = np.iinfo(dtype)
    low, high = max(info.min, -(1 << (bits - 1))), min(info.max, (1 << bits) - 1)
    pixels = rng.integers(low, high, size=(97, 131), endpoint=True).astype(dtype)
    desc = PixelDescription(
        rows=97, columns=131, bits_allocated=8 * np.dtype(dtype).itemsize, bits_stored=bits,
        pixel_representation=int(info.min < 0), rescale_slope=slope, rescale_intercept=intercept,
        window_centers=centers, window_widths=widths, voi_lut_function=fn,
    )
    for window in (None, (300.0, 700.0), (5.0, 0.5, "LINEAR_EXACT")):
        values = render.modality_values(pixels, desc)
        voi = render.Window.of(window) if window else render.default_window(values, desc)
        expected = render.apply_window(values, voi, 255.0)
        found = render.window_through_lut(pixels, desc, window, 255.0)
        assert found.dtype == expected.dtype
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(("dtype", "bits", "slope", "intercept", "centers", "widths", "fn"), CASES)
def test_gray8_equals_float_image_rounded(dtype, bits, slope, intercept, centers, widths, fn,
                                          photometric) -> None:
    """The 8-bit table gives the bytes the float pipeline and `encode_image` would give,
    also for big endian samples and a frame that does not start at the type's minimum."""
    rng = np.random.default_rng(bits + 1)
    info = np.iinfo(dtype)
    low, high = max(info.min, -(1 << (bits - 1))), min(info.max, (1 << bits) - 1)
    pixels = rng.integers(low, high, size=(61, 83), endpoint=True).astype(dtype)
    desc = PixelDescription(
        rows=61, columns=83, bits_allocated=8 * np.dtype(dtype).itemsize, bits_stored=bits,
        pixel_representation=int(info.min < 0), rescale_slope=slope, rescale_intercept=intercept,
        window_centers=centers, window_widths=widths, voi_lut_function=fn,
        photometric_interpretation=photometric,
    )
    for frame in (pixels, pixels.astype(np.dtype(dtype).newbyteorder(">")), pixels[5:40, 7:60]):
        for window in (None, (300.0, 700.0), (5.0, 0.5, "LINEAR_EXACT")):
            floats = render.render_array(np.asarray(frame, dtype=dtype), desc, window=window)
            expected = render.to_integers(floats, 1.0, 255, np.uint8)
            found = render.gray8_image(frame, desc, window, None)
            assert found is not None and found.dtype == np.uint8
            np.testing.assert_array_equal(found, expected)
