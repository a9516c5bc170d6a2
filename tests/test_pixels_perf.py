"""MPR timing on a 400-slice 256x256 series (targets: build+first reformat < 1 s,
cached reformats < 50 ms; asserted with slack for slow CI machines)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dicomweb.pixels.mpr import reformat
from dicomweb.pixels.volume import SliceGeometry, build_volume_geometry, load_volume


@pytest.mark.slow
def test_mpr_timing() -> None:
    n, rows, cols = 400, 256, 256
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4000, (rows, cols), dtype=np.uint16) for _ in range(n)]
    slices = [
        SliceGeometry(
            f"1.2.{k}",
            1,
            (-128.0, -128.0, float(k)),
            (1, 0, 0, 0, 1, 0),
            (1.0, 1.0),
            rows,
            cols,
            "1.2.3",
            1.0,
            -1024.0,
        )
        for k in range(n)
    ][::-1]
    start = time.perf_counter()
    volume = load_volume(build_volume_geometry(slices), frames[::-1])
    reformat(volume, "axial")
    first = time.perf_counter() - start
    timings = {}
    for plane, normal in [
        ("axial", None),
        ("sagittal", None),
        ("coronal", None),
        ("oblique", (0.3, 0.2, 0.9)),
    ]:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            reformat(volume, plane, normal=normal)
            runs.append(time.perf_counter() - t0)
        timings[plane] = float(np.median(runs))
    print(
        f"build+first {first * 1000:.0f} ms; "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
    )
    assert first < 3.0
    assert max(timings.values()) < 0.5  # 50 ms target; slack for loaded CI machines
