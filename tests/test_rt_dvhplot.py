"""DVHs as pictures (``Accept: image/png`` / ``image/svg+xml`` on the dvh resource), read
back: the curves' pixels map onto the JSON DVH through the plot's own layout."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import requests
from factory import with_meta
from PIL import Image

from conformance import dvhset
from dicomweb.rt import dvhplot

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def dvh_url(server) -> dict:
    """The 2 mm Gaussian dose and the 2 mm structure set of the analytic set (the sphere,
    cylinder and cone, all in the set's one Frame of Reference)."""
    dvh = dvhset.DvhSet()
    response = server.stow(with_meta(dvhset.rtstruct_dataset(dvh, 2.0)),
                           with_meta(dvhset.rtdose_dataset(dvh, 2.0, "gauss")))
    assert response.status_code == 200, response.text
    truth = dvhset.ground_truth(dvh)
    url = (f"{server.url}/studies/{truth['study_instance_uid']}/series/"
           f"{truth['dose_series']['2/gauss']}/instances/{truth['doses']['2/gauss']}/rt/dose/dvh")
    return {"url": url, "structures": truth["structure_sets"]["2"]}


def _get(dvh_url: dict, accept: str, **params) -> requests.Response:
    response = requests.get(dvh_url["url"], params={"structures": dvh_url["structures"],
                                                    "roi": "1,2,3", **params},
                            headers={"Accept": accept}, timeout=120)
    assert response.status_code == 200, response.text
    return response


def _colour(hex_text: str) -> tuple[int, int, int]:
    return tuple(int(hex_text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@pytest.mark.parametrize("volume", ["pct", "cc"])
def test_svg_curves_are_the_dvhs_in_roi_colours(dvh_url: dict, volume: str) -> None:
    dvhs = _get(dvh_url, "application/json").json()["dvhs"]
    svg = _get(dvh_url, "image/svg+xml", volume=volume)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.content)
    left, top, right, bottom = (float(v) for v in root.get("data-plot").split())
    x_max, y_max = float(root.get("data-x-max")), float(root.get("data-y-max"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Dose (Gy)" in texts and ("Volume (%)" if volume == "pct" else "Volume (cm³)") in texts
    lines = {line.get("data-roi"): line for line in root.iter(f"{SVG}polyline")}
    assert len(lines) == 3
    for body in dvhs:
        label = f"{body['roi_number']} {body['roi_name']}"
        assert label in texts  # the legend
        line = lines[label]
        assert _colour(line.get("stroke")) == tuple(dvhset.ROI_COLOURS[body["roi_name"].lower()])
        xy = np.array([p.split(",") for p in line.get("points").split()], dtype=float)
        dose = (xy[:, 0] - left) / (right - left) * x_max
        shown = (bottom - xy[:, 1]) / (bottom - top) * y_max
        expected = np.interp(dose[:-1], body["dose_gy"],
                             body["volume_pct"] if volume == "pct" else body["volume_cc"])
        np.testing.assert_allclose(shown[:-1], expected, atol=y_max * 2e-4)
        assert shown[-1] == pytest.approx(0, abs=1e-6)  # the curve drops to nothing at its end


def test_png_curves_pass_through_the_metrics(dvh_url: dict) -> None:
    dvhs = _get(dvh_url, "application/json").json()["dvhs"]
    png = _get(dvh_url, "image/png")
    assert png.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert image.shape == (dvhplot.HEIGHT, dvhplot.WIDTH, 3)
    curves = [dvhplot.Curve(f"{b['roi_number']} {b['roi_name']}",
                            tuple(b["roi_display_color"]), np.array(b["dose_gy"]),
                            np.array(b["volume_pct"])) for b in dvhs]
    layout = dvhplot.layout(curves, "pct")
    for body in dvhs:
        colour = np.array(body["roi_display_color"])
        mask = np.all(image == colour, axis=2)
        mask[: int(layout.top) + 16 + 18 * 3, int(layout.right) - 175:] = False  # the legend
        ys, xs = np.nonzero(mask)
        assert xs.size > 200
        for m in body["dose_at_volume"]:  # D98, D95, D50, D2 of the JSON answer
            x, y = layout.to_pixel(m["dose_gy"], m["volume_pct"])
            near = np.abs(xs - x) <= 1
            assert near.any() and np.min(np.abs(ys[near] - y)) <= 3, (body["roi_name"], m)


def test_unsupported_media_type_is_406(dvh_url: dict) -> None:
    response = requests.get(dvh_url["url"], params={"structures": dvh_url["structures"],
                                                    "roi": "1"},
                            headers={"Accept": "image/jpeg"}, timeout=60)
    assert response.status_code == 406
    assert "image/png" in response.json()["error"]["message"]


def test_nice_axes() -> None:
    assert dvhplot.nice_step(62.0) == 10 and dvhplot.nice_step(7.3) == 1
    curve = dvhplot.Curve("1 A", (1, 2, 3), np.array([0.0, 30.0, 61.2]),
                          np.array([33.5, 10.0, 0.0]))
    layout = dvhplot.layout([curve], "cc")
    assert layout.x_max == 70 and layout.y_max >= 33.5
    x, y = layout.to_pixel(30.0, 10.0)
    assert layout.to_data(x, y) == pytest.approx((30.0, 10.0))
