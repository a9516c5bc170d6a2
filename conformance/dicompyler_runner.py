"""DVHs by dicompyler-core, run inside the benchmark's own venv (pydicom < 3).

Not imported by the project: ``conformance.bench_rt`` runs it with the interpreter of the
venv it creates (``dicompyler-core==0.5.6``). Reads a JSON job from stdin::

    {"cases": [{"key": K, "structure": PATH, "dose": PATH, "roi": N, "levels": [Gy, ...]}],
     "options": {...get_dvh keyword arguments...}, "repeats": R}

(``interpolation_resolution_divisor: n`` in the options asks for an interpolation resolution of
the dose's pixel spacing / n, which dicompyler-core requires to be a power of 2.)

and writes one JSON object to stdout: per case the metrics (volume cc, mean Gy, D98/D95/D50/D2
in Gy, V at each level in cc) and the CPU seconds of each ``get_dvh`` call. The files are read
once, before timing (``get_dvh`` accepts datasets), so times are the calculation alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import pydicom
from dicompylercore import dvhcalc


def metrics(dvh, levels: list[float]) -> dict:
    out = {"volume_cc": float(dvh.volume), "mean_gy": float(dvh.mean)}
    for pct in (98, 95, 50, 2):
        out[f"d{pct}_gy"] = float(dvh.dose_constraint(pct).value)
    out["v_at_levels_cc"] = [float(dvh.volume_constraint(level, "Gy").value)
                             for level in levels]
    return out


def main() -> int:
    job = json.load(sys.stdin)
    options = job.get("options", {})
    repeats = int(job.get("repeats", 1))
    files: dict[str, pydicom.Dataset] = {}
    results = {}
    for case in job["cases"]:
        for role in ("structure", "dose"):
            if case[role] not in files:
                files[case[role]] = pydicom.dcmread(case[role])
        kwargs = dict(options)
        divisor = kwargs.pop("interpolation_resolution_divisor", None)
        if divisor:  # dicompyler-core wants the dose pixel spacing / 2^n
            spacing = [float(v) for v in files[case["dose"]].PixelSpacing]
            kwargs["interpolation_resolution"] = (spacing[0] / divisor, spacing[1] / divisor)
        times = []
        for _ in range(repeats):
            start = time.process_time()
            dvh = dvhcalc.get_dvh(files[case["structure"]], files[case["dose"]], case["roi"],
                                  **kwargs)
            times.append(time.process_time() - start)
        results[case["key"]] = {**metrics(dvh, case.get("levels", [])),
                                "seconds": times, "median_s": statistics.median(times)}
    json.dump({"dicompyler_core": __import__("dicompylercore").__version__,
               "pydicom": pydicom.__version__, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
