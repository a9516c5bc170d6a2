"""The comparison report (conformance/compare.py): medians of the runs, ratios ours/Orthanc,
and the issue's aims marked as met or not."""

from __future__ import annotations

from conformance import compare


def report(stow4: float, frames6: float, study_list_ms: float) -> dict:
    return {
        "stow": [{"name": "stow small", "clients": 4, "items_per_s": stow4, "supported": True}],
        "frames": [{"name": "frames", "clients": 6, "items_per_s": frames6, "supported": True}],
        "qido": [{"name": "OHIF study list", "p50_ms": study_list_ms, "supported": True}],
        "metadata": {"supported": False, "p50_ms": None},
    }


def test_headline_medians_ratios_and_aims() -> None:
    runs = {
        "ours": [report(1800, 900, 5.0), report(1500, 700, 9.0), report(2000, 800, 6.0)],
        "orthanc": [report(1000, 260, 70.0), report(1100, 270, 80.0), report(900, 250, 75.0)],
    }
    table = compare.headline(runs).splitlines()
    stow = next(line for line in table if line.startswith("| STOW small studies, batches of 32, 4"))
    assert "| 1,800 inst/s | 1,000 inst/s | 1.80× | ≥ 1.5× ✓ |" in stow
    frames = next(line for line in table if line.startswith("| frames, 6 concurrent"))
    assert "| 800 /s | 260 /s | 3.08× | ≥ 3× ✓ |" in frames
    qido = next(line for line in table if line.startswith("| QIDO OHIF study list"))
    assert "| 6.0 ms | 75.0 ms | 0.08× | ≤ 0.1× ✓ |" in qido
    metadata = next(line for line in table if line.startswith("| series metadata, 392"))
    assert "| n/a | n/a | n/a |" in metadata


def test_aim_missed_is_marked() -> None:
    runs = {"ours": [report(900, 100, 50.0)], "orthanc": [report(1000, 260, 70.0)]}
    table = compare.headline(runs)
    assert "≥ 1.5× ✗" in table and "≤ 0.1× ✗" in table
