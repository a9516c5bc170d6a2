"""DVH accuracy and speed, ours against dicompyler-core, on the same files.

``python -m conformance.bench_rt --dvhset [--dicompyler-venv DIR] [--no-dicompyler]
[--quick] [--output F]``

Writes the analytic test set of :mod:`conformance.dvhset` (108 cases: 3 shapes × 3 contour
spacings × 3 dose grids × 4 dose fields, 8 metrics each) and the generator's RT study (its
BODY ROI over 30 CT slices: a 300 mm cylinder of ~6,360 cm³, on the 3 mm dose grid) to a
temporary folder, then computes every DVH with

* ours: :func:`dicomweb.rt.dvh.compute_dvh` with the API defaults (``endcap=auto``,
  ``interpolation=quadratic``) and with the former method (``endcap=half``,
  ``interpolation=trilinear``), in this process, from the files;
* dicompyler-core 0.5.6 (it needs pydicom < 3): in a venv of its own, created on first use
  (``pip install dicompyler-core==0.5.6 'pydicom<3' scikit-image``), by
  :mod:`conformance.dicompyler_runner`, with its defaults and interpolated (in plane to a
  quarter of the dose pixel spacing, 0.75 mm on a 3 mm grid; 2 segments between planes).

Each metric counts as a hit when within 1 % of the analytic truth. Times are CPU seconds of
the DVH calculation alone (files read and parsed before timing), medians of the repeats; both
tools run single-threaded, so CPU time is also their wall time on a quiet machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread

from conformance import dvhset
from conformance import generate as gen
from dicomweb.rt.dose import dose_values, parse_dose
from dicomweb.rt.dvh import compute_dvh
from dicomweb.rt.interpolation import DoseSampler
from dicomweb.rt.structures import parse_structure_set

DICOMPYLER = ("dicompyler-core==0.5.6", "pydicom<3", "scikit-image")  # skimage: interpolation
OURS = {"ours": {"endcap": "auto", "interpolation": "quadratic"},
        "ours_half_trilinear": {"endcap": "half", "interpolation": "trilinear"}}
THEIRS = {"dicompyler_core": {},
          "dicompyler_core_interpolated": {"interpolation_resolution_divisor": 4,
                                           "interpolation_segments_between_planes": 2}}
BIG_SEED = 9090
BIG_CT_SLICES = 30  # the BODY cylinder then holds ~6,360 cm³
TOLERANCE = 0.01


def dicompyler_python(venv: Path) -> Path:
    """The interpreter of a venv holding dicompyler-core 0.5.6 (created when missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {' '.join(DICOMPYLER)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(python), "-c", "import dicompylercore, skimage"],
                          capture_output=True)
    if done.returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DICOMPYLER], check=True)
    return python


def write_inputs(folder: Path, quick: bool) -> tuple[dict, list[dict]]:
    """The test set's files and the big-ROI files; the cases as runner jobs."""
    data = dvhset.write_set(folder / "set")
    jobs = []
    for case in dvhset.cases():
        if quick and (case.spacing_mm != 2.0 or case.grid_mm == 1.0):
            continue
        t = data["truth"][f"{case.shape}/{case.field}"]
        jobs.append({"key": case.key, "roi": dvhset.ROI_NUMBERS[case.shape],
                     "structure": str(folder / "set" / f"RTSTRUCT_{case.spacing_mm:g}mm.dcm"),
                     "dose": str(folder / "set" / f"RTDOSE_{case.grid_mm:g}mm_{case.field}.dcm"),
                     "levels": [t["v_low_level_gy"], t["v_high_level_gy"]]})
    rt = gen.RtStudy(seed=BIG_SEED, ct_slices=BIG_CT_SLICES, mr_slices=0)
    gen.write(gen.rtstruct_dataset(rt), folder / "big" / "RTSTRUCT.dcm")
    gen.write(gen.rtdose_dataset(rt), folder / "big" / "RTDOSE.dcm")
    truth = gen.ground_truth(rt)
    big = {"key": "big/BODY", "roi": truth["roi_numbers"]["BODY"],
           "structure": str(folder / "big" / "RTSTRUCT.dcm"),
           "dose": str(folder / "big" / "RTDOSE.dcm"), "levels": [5.0, 20.0, 50.0],
           "analytic_volume_cc": truth["rois"]["BODY"]["volume_cm3"]}
    return data, [*jobs, big]


def run_ours(jobs: list[dict], options: dict[str, str], repeats: int) -> dict[str, dict]:
    files: dict[str, Any] = {}
    out = {}
    for job in jobs:
        if job["structure"] not in files:
            files[job["structure"]] = parse_structure_set(dcmread(job["structure"]))
        if job["dose"] not in files:
            ds = dcmread(job["dose"])
            grid = parse_dose(ds)
            files[job["dose"]] = (grid, DoseSampler(dose_values(ds, grid)))
        roi = files[job["structure"]].roi(job["roi"])
        grid, sampler = files[job["dose"]]
        times = []
        for _ in range(repeats):  # the first call of a dose also derives its cell terms
            start = time.process_time()
            dvh = compute_dvh(grid, sampler, roi, dose_levels=job["levels"],
                              volume_levels=dvhset.VOLUME_LEVELS_PCT, **options)
            times.append(time.process_time() - start)
        metrics = {"volume_cc": dvh.total_volume_cc, "mean_gy": dvh.mean_gy,
                   "v_at_levels_cc": [v.volume_cc for v in dvh.volume_at_dose]}
        metrics.update({f"d{d.volume_pct:g}_gy": d.dose_gy for d in dvh.dose_at_volume})
        out[job["key"]] = {**metrics, "median_s": statistics.median(times), "seconds": times}
    return out


def run_dicompyler(python: Path, jobs: list[dict], options: dict, repeats: int) -> dict:
    job = {"cases": jobs, "options": options, "repeats": repeats}
    runner = Path(__file__).with_name("dicompyler_runner.py")
    done = subprocess.run([str(python), str(runner)], input=json.dumps(job), text=True,
                          capture_output=True)
    if done.returncode:
        raise RuntimeError(f"dicompyler-core failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)["results"]


def score(data: dict, jobs: list[dict], results: dict[str, dict]) -> dict:
    """Hits (metrics within 1 %) per family (shape, field, grid, spacing) and in all."""
    families: dict[str, list[int]] = {}
    errors = []
    for job in jobs:
        if job["key"].startswith("big/"):
            continue
        shape, spacing, grid, field = job["key"].split("/")
        t = data["truth"][f"{shape}/{field}"]
        got = results[job["key"]]
        got = {**got, "v_low_cc": got["v_at_levels_cc"][0], "v_high_cc": got["v_at_levels_cc"][1]}
        for metric in dvhset.METRICS:
            error = (got[metric] - t[metric]) / t[metric]
            hit = abs(error) <= TOLERANCE
            errors.append(abs(error))
            for family in (f"shape={shape}", f"field={field}", f"grid={grid[1:]}mm",
                           f"contours={spacing[1:]}mm", "all"):
                counts = families.setdefault(family, [0, 0])
                counts[0] += hit
                counts[1] += 1
    order = sorted(families, key=lambda k: (k != "all", k.split("=")[0] not in ("shape",),
                                            k.split("=")[0] not in ("shape", "field"), k))
    return {"hits": {k: f"{families[k][0]}/{families[k][1]}" for k in order},
            "median_abs_error_pct": round(100 * statistics.median(errors), 3),
            "max_abs_error_pct": round(100 * max(errors), 2)}


def run_dvhset_bench(*, dicompyler_venv: Path | None, quick: bool = False,
                     reuse: Path | None = None) -> dict:
    """``reuse``: the ``--output`` report of an earlier run whose dicompyler-core figures are
    taken instead of running it again (nothing on its side depends on our code)."""
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="dvhset-") as tmp:
        data, jobs = write_inputs(Path(tmp), quick)
        results = {name: run_ours(jobs, options, repeats) for name, options in OURS.items()}
        earlier = json.loads(reuse.read_text()) if reuse is not None else None
        if earlier is None and dicompyler_venv is not None:
            python = dicompyler_python(dicompyler_venv)
            for name, options in THEIRS.items():
                try:
                    results[name] = run_dicompyler(python, jobs, options, repeats)
                except RuntimeError as exc:  # keep the other tools' figures
                    print(exc, file=sys.stderr)
    big = next(j for j in jobs if j["key"] == "big/BODY")
    report: dict[str, Any] = {"cases": len(jobs) - 1, "metrics_per_case": len(dvhset.METRICS),
                              "tolerance_pct": 100 * TOLERANCE, "repeats": repeats,
                              "big_roi_analytic_cc": round(big["analytic_volume_cc"], 1),
                              "tools": {}}
    for name, result in results.items():
        b = result["big/BODY"]
        report["tools"][name] = {
            **score(data, jobs, result),
            "set_total_s": round(sum(r["median_s"] for k, r in result.items()
                                     if not k.startswith("big/")), 3),
            "big_roi_s": round(b["median_s"], 3),
            "big_roi_first_s": round(b["seconds"][0], 3) if b.get("seconds") else None,
            "big_roi_volume_cc": round(b["volume_cc"], 1)}
    if earlier is not None:  # dicompyler-core's scores and times as that run reported them
        report["reused_from"] = str(reuse)
        report["tools"].update({k: v for k, v in earlier["tools"].items() if k in THEIRS})
    report["raw"] = results
    return report


def render_table(report: dict) -> str:
    """The README table: hits per family and the big ROI's time, per tool."""
    tools = report["tools"]
    families = list(next(iter(tools.values()))["hits"])
    head = "| family | " + " | ".join(tools) + " |"
    lines = [head, "|---" * (len(tools) + 1) + "|"]
    for family in families:
        lines.append(f"| {family} | " + " | ".join(t["hits"][family] for t in tools.values())
                     + " |")
    lines.append("| median / max error % | " + " | ".join(
        f"{t['median_abs_error_pct']} / {t['max_abs_error_pct']}" for t in tools.values()) + " |")
    lines.append("| whole set, CPU s | " + " | ".join(
        f"{t['set_total_s']}" for t in tools.values()) + " |")
    lines.append(f"| BODY {report['big_roi_analytic_cc']:.0f} cm³, CPU s | " + " | ".join(
        f"{t['big_roi_s']}" for t in tools.values()) + " |")
    lines.append("| BODY, first call of its dose, CPU s | " + " | ".join(
        f"{t.get('big_roi_first_s') or 'n/a'}" for t in tools.values()) + " |")
    return "\n".join(lines)
