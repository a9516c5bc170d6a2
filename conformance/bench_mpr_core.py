"""MPR in one process: our reformat of a cached 512×512×200 CT against a bare
``scipy.ndimage.map_coordinates(order=1)`` of the same plane (CPU time, A/B interleaved).

``python -m conformance.bench_mpr_core [--repeats N]`` (also part of
``python -m conformance.bench_pixels``).

The volume is a float32 512×512×200 axial CT (0.7 mm pixels, 1.25 mm slices; smooth values
so nothing is constant). For each plane (axial, coronal, sagittal through the centre, and an
oblique plane of normal (1, 1, 1)) ``reformat`` is timed whole (plane geometry, patient
points, indices, interpolation, NaN outside) and the baseline is ``map_coordinates`` alone,
given the very index coordinates ``reformat`` samples (computed before timing). Both are
timed by ``time.process_time`` in alternation, medians of the repeats: the ratio is what the
issue bounds (< 2), measured on a machine that may be shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from scipy import ndimage

from dicomweb.pixels.mpr import plane_axes, reformat
from dicomweb.pixels.volume import SliceGeometry, Volume, build_volume_geometry

SIZE = (512, 512, 200)  # columns, rows, slices
PIXEL_MM, SLICE_MM = 0.7, 1.25
PLANES = {"axial": None, "coronal": None, "sagittal": None, "oblique": (1.0, 1.0, 1.0)}


def ct_volume() -> Volume:
    cols, rows, slices = SIZE
    geometry = build_volume_geometry([SliceGeometry(
        f"1.2.3.{k}", 1, (-cols * PIXEL_MM / 2, -rows * PIXEL_MM / 2, k * SLICE_MM),
        (1, 0, 0, 0, 1, 0), (PIXEL_MM, PIXEL_MM), rows, cols) for k in range(slices)])
    z, y, x = np.ogrid[:slices, :rows, :cols]
    values = (1000 * np.sin(x / 37.0) * np.cos(y / 23.0) + 3 * z).astype(np.float32)
    return Volume(values=values, geometry=geometry)


def plane_indices(volume: Volume, plane: str, normal) -> np.ndarray:
    """The (slice, row, column) indices ``reformat`` samples for this plane, (3, N)."""
    result = reformat(volume, plane, normal=normal)
    rows, cols = result.values.shape
    r_dir, c_dir, _ = plane_axes(plane, volume.geometry, normal)
    origin = np.asarray(result.origin)
    points = (origin[None, None, :]
              + (np.arange(cols) * result.pixel_spacing[1])[None, :, None] * r_dir
              + (np.arange(rows) * result.pixel_spacing[0])[:, None, None] * c_dir)
    return volume.geometry.to_index(points.reshape(-1, 3)).T


def run(repeats: int = 15) -> dict:
    volume = ct_volume()
    out = {"volume": "x".join(map(str, SIZE)), "repeats": repeats, "planes": {}}
    for plane, normal in PLANES.items():
        coords = plane_indices(volume, plane, normal)
        ours, bare = [], []
        for _ in range(repeats):
            start = time.process_time()
            result = reformat(volume, plane, normal=normal)
            ours.append(time.process_time() - start)
            start = time.process_time()
            ndimage.map_coordinates(volume.values, coords, order=1, mode="constant",
                                    cval=np.nan, prefilter=False)
            bare.append(time.process_time() - start)
        o, b = statistics.median(ours), statistics.median(bare)
        out["planes"][plane] = {"shape": list(result.values.shape), "ours_ms": round(1e3 * o, 2),
                                "map_coordinates_ms": round(1e3 * b, 2),
                                "ratio": round(o / b, 2) if b else None}
    return out


def render_table(report: dict) -> str:
    lines = ["| plane (512×512×200 CT, cached) | pixels | ours, CPU ms | bare map_coordinates, "
             "CPU ms | ratio |", "|---|---|---|---|---|"]
    for plane, r in report["planes"].items():
        lines.append(f"| {plane} | {r['shape'][1]}×{r['shape'][0]} | {r['ours_ms']} | "
                     f"{r['map_coordinates_ms']} | {r['ratio']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    report = run(args.repeats)
    print(render_table(report))
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(report, fp, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
