"""The RT and MPR benchmarks run and score what they say (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from conformance import bench_dvhset, bench_mpr_core, dvhset


def test_dvhset_bench_scores_ours_on_the_same_files(tmp_path: Path) -> None:
    data, jobs = bench_dvhset.write_inputs(tmp_path, quick=True)
    picked = [j for j in jobs if j["key"] in ("sphere/s2/g2/gauss", "cone/s2/g3/x")]
    assert len(picked) == 2 and (tmp_path / "big" / "RTSTRUCT.dcm").is_file()
    results = bench_dvhset.run_ours(picked, bench_dvhset.OURS["ours"], repeats=1)
    scored = bench_dvhset.score(data, picked, results)
    metrics = 2 * len(dvhset.METRICS)
    assert scored["hits"]["all"] == f"{metrics}/{metrics}"  # the default is within 1 %
    assert set(scored["hits"]) >= {"shape=sphere", "shape=cone", "field=gauss", "grid=3mm"}
    report = {"tools": {"ours": {**scored, "set_total_s": 0.1, "big_roi_s": 0.2}},
              "big_roi_analytic_cc": 6362.0}
    table = bench_dvhset.render_table(report)
    assert "| all | 16/16 |" in table and "BODY 6362 cm³" in table


def test_mpr_core_bench_compares_the_same_planes() -> None:
    report = bench_mpr_core.run(repeats=1)
    assert set(report["planes"]) == {"axial", "coronal", "sagittal", "oblique"}
    assert report["planes"]["axial"]["shape"] == [512, 512]
    assert all(p["ours_ms"] > 0 and p["map_coordinates_ms"] > 0
               for p in report["planes"].values())
