"""The analytic DVH test set (conformance.dvhset): its truth, and our DVHs against it.

All objects are in the set's one Frame of Reference; the dose grids and the contours are
placed in it directly (no registration involved).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from factory import with_meta

from conformance import dvhset


@pytest.mark.parametrize("field", dvhset.FIELDS)
@pytest.mark.parametrize("name", dvhset.SHAPES)
def test_truth_agrees_with_a_dense_sampling_of_the_exact_shape(name: str, field: str) -> None:
    """A 0.25 mm lattice of the exact shape (not of its contours) under the exact dose."""
    shape = dvhset.shape(name)
    h = 0.25
    axis = np.arange(-20 + h / 2, 20, h)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    doses = []
    for z in np.arange(shape.z_range[0] + h / 2, shape.z_range[1], h):
        inside = x**2 + y**2 <= shape.radius(z) ** 2
        points = np.stack([x[inside], y[inside], np.full(inside.sum(), z)], axis=1)
        doses.append(dvhset.dose_gy(field, points))
    dose = np.concatenate(doses)
    truth = dvhset.truth(name, field)
    assert dose.size * h**3 / 1000 == pytest.approx(truth["volume_cc"], rel=2e-3)
    assert dose.mean() == pytest.approx(truth["mean_gy"], rel=1e-3)
    for pct in dvhset.VOLUME_LEVELS_PCT:
        # (a z gradient of 1 Gy/mm sees the lattice's 0.25 mm steps)
        assert np.percentile(dose, 100 - pct) == pytest.approx(truth[f"d{pct:g}_gy"], rel=5e-3,
                                                               abs=0.13)
    for level in ("low", "high"):
        sampled = np.count_nonzero(dose >= truth[f"v_{level}_level_gy"]) * h**3 / 1000
        assert sampled == pytest.approx(truth[f"v_{level}_cc"], rel=5e-3)


def test_contours_put_flat_faces_on_planes() -> None:
    cylinder, cone, sphere = (dvhset.shape(n) for n in ("cylinder", "cone", "sphere"))
    for spacing in dvhset.SPACINGS_MM:
        planes = dvhset.contour_planes(cylinder, spacing)
        assert planes[0] == -24 and planes[-1] == 24
        assert dvhset.contour_planes(cone, spacing)[0] == -24
        assert 24 not in dvhset.contour_planes(cone, spacing)  # the apex has no area
        assert all(abs(z) < 20 for z in dvhset.contour_planes(sphere, spacing))


@pytest.fixture(scope="module")
def stored_set(server) -> dict:
    dvh = dvhset.DvhSet()
    datasets = [with_meta(build()) for _, build in dvhset.files(dvh)]
    for start in range(0, len(datasets), 5):
        response = server.stow(*datasets[start:start + 5])
        assert response.status_code == 200, response.text
    return dvhset.ground_truth(dvh)


def _our_metrics(server, data: dict, case: dvhset.Case, **params) -> dict:
    truth = data["truth"][f"{case.shape}/{case.field}"]
    key = f"{case.grid_mm:g}/{case.field}"
    url = (f"{server.url}/studies/{data['study_instance_uid']}/series/"
           f"{data['dose_series'][key]}/instances/{data['doses'][key]}/rt/dose/dvh")
    response = requests.get(url, params={
        "structures": data["structure_sets"][f"{case.spacing_mm:g}"],
        "roi": dvhset.ROI_NUMBERS[case.shape],
        "levels": f"{truth['v_low_level_gy']},{truth['v_high_level_gy']}", **params},
        timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    metrics = dict(body["metrics"])
    metrics["v_low_cc"], metrics["v_high_cc"] = (v["volume_cc"] for v in body["volume_at_dose"])
    return metrics


def test_every_metric_of_the_set_within_one_percent(server, stored_set: dict) -> None:
    """108 DVHs (3 shapes × 3 contour spacings × 3 dose grids × 4 fields) × 8 metrics, with
    the defaults (endcap=auto, interpolation=quadratic): every one within 1 % of the truth."""
    misses = []
    for case in dvhset.cases():
        ours = _our_metrics(server, stored_set, case)
        truth = stored_set["truth"][f"{case.shape}/{case.field}"]
        for metric in dvhset.METRICS:
            error = (ours[metric] - truth[metric]) / truth[metric]
            if abs(error) > 0.01:
                misses.append(f"{case.key} {metric} {100 * error:+.2f} %")
    assert not misses, misses


def test_the_other_end_caps_are_what_they_say(server, stored_set: dict) -> None:
    """endcap=half adds half a spacing to each flat face of the cylinder; none equals auto
    on it and cuts the sphere's poles."""
    cylinder = dvhset.Case("cylinder", 3.0, 2.0, "x")
    sphere = dvhset.Case("sphere", 3.0, 2.0, "x")
    volume = stored_set["truth"]["cylinder/x"]["volume_cc"]
    half = _our_metrics(server, stored_set, cylinder, endcap="half")["volume_cc"]
    assert half == pytest.approx(volume * (48 + 3) / 48, rel=1e-3)
    assert _our_metrics(server, stored_set, cylinder, endcap="none")["volume_cc"] == \
        pytest.approx(volume, rel=1e-3)
    assert _our_metrics(server, stored_set, sphere, endcap="none")["volume_cc"] < \
        0.99 * stored_set["truth"]["sphere/x"]["volume_cc"]
