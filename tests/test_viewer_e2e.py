"""End to end: the OHIF viewer served by `dicomweb serve --viewer`, driven in headless Chromium.

Needs `node` (with npm), Chromium (`/usr/bin/chromium`, Debian's `chromium` package, or
DICOMWEB_TEST_CHROMIUM) and the fetched viewer (`dicomweb viewer fetch`; the cache folder is
DICOMWEB_TEST_VIEWER_DIR, default ~/.cache/dicomweb/viewer). Without them the tests skip, unless
CI is set: then they fail, and a missing viewer is fetched. `tests/e2e/ohif.spec.mjs` does the
browsing; screenshots go to DICOMWEB_TEST_ARTIFACTS (default artifacts/e2e/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import with_meta
from pydicom.dataset import Dataset

from conformance import generate as gen
from conformance import phantoms
from dicomweb.config import Settings
from dicomweb.viewer import dist_dir, fetch

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "tests" / "e2e"
CHROMIUM = os.environ.get("DICOMWEB_TEST_CHROMIUM", "/usr/bin/chromium")
VIEWER_DIR = os.environ.get("DICOMWEB_TEST_VIEWER_DIR") or os.environ.get("DICOMWEB_VIEWER_DIR")
ARTIFACTS = Path(os.environ.get("DICOMWEB_TEST_ARTIFACTS", ROOT / "artifacts" / "e2e"))
IN_CI = bool(os.environ.get("CI"))
SEED = 7331  # other modules store the generator's RT study with other seeds and sizes

#: Patients of the small studies: distinct names, non-ASCII ones among them.
SMALL_PATIENTS = [
    gen.Patient("Müller^Jürgen", "E2E-MUELLER", "19610304", "M", "ISO_IR 192"),
    gen.Patient("Smith^Alice", "E2E-SMITH", "19820517", "F", "ISO_IR 100"),
    gen.Patient("王^小明", "E2E-WANG", "19900101", "M", "ISO_IR 192"),
]


def viewer_settings() -> Settings:
    return Settings(viewer_dir=Path(VIEWER_DIR) if VIEWER_DIR else None)


def missing_requirements() -> list[str]:
    missing = []
    if not shutil.which("node") or not shutil.which("npm"):
        missing.append("node/npm (Node.js 20+)")
    if not Path(CHROMIUM).is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium, or set DICOMWEB_TEST_CHROMIUM)")
    if not (dist_dir(viewer_settings()) / "index.html").is_file() and not IN_CI:
        missing.append("the OHIF viewer (run `dicomweb viewer fetch`)")
    return missing


@pytest.fixture(scope="module")
def e2e_ready() -> None:
    missing = missing_requirements()
    if missing:
        message = "OHIF end-to-end tests need " + ", ".join(missing)
        if IN_CI:
            pytest.fail(message + " (CI is set: they must run)")
        pytest.skip(message)
    if not (dist_dir(viewer_settings()) / "index.html").is_file():  # under CI: fetch it now,
        fetch(viewer_settings())  # not inside the server's start-up time limit
    if not (E2E / "node_modules" / "playwright-core").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=E2E,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci in tests/e2e failed:\n{done.stdout}\n{done.stderr}"


def viewer_args(*more: str) -> list[str]:
    args = ["--viewer", *more]
    if VIEWER_DIR:
        args += ["--viewer-dir", VIEWER_DIR]
    return args


def stow_all(server: Server, datasets: list[Dataset], batch: int = 10) -> None:
    for start in range(0, len(datasets), batch):
        response = server.stow(*[with_meta(ds) for ds in datasets[start:start + batch]])
        assert response.status_code == 200, response.text


def upload_demo_data(server: Server) -> dict:
    """A 20-slice planning CT with its RTSTRUCT, RTPLAN and RTDOSE (its Frame of Reference), and
    three small studies; returns what the browser script expects to see."""
    rt = gen.RtStudy(seed=SEED, ct_slices=20)
    stow_all(server, gen.ct_series_datasets(rt))
    stow_all(server, [gen.rtstruct_dataset(rt), gen.rtplan_dataset(rt), gen.rtdose_dataset(rt)])
    studies = [{"uid": str(rt.study.uid), "patientName": rt.patient.name,
                "patientId": rt.patient.patient_id, "ct": True}]
    rng = np.random.default_rng(SEED)
    for index, patient in enumerate(SMALL_PATIENTS):
        summary, datasets = gen.small_study_datasets(index, patient, rng, SEED)
        stow_all(server, datasets)
        studies.append({"uid": summary["study_instance_uid"], "patientName": patient.name,
                        "patientId": patient.patient_id,
                        "modalities": summary["modalities"]})
    listed = requests.get(f"{server.url}/studies", timeout=30).json()
    assert len(listed) == len(studies), listed
    return {"studies": studies, "ctStudy": str(rt.study.uid),
            "rtdoseSeries": str(rt.series_uid("rtdose")),
            "search": [
            {"text": "Müller", "expect": [studies[1]["uid"]]},  # non-ASCII, percent-encoded
            {"text": "smith", "expect": [studies[2]["uid"]]},  # fuzzy: case-insensitive
        ]}


@pytest.fixture(scope="module")
def data_server(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory):
    running = start_server(tmp_path_factory.mktemp("viewer-e2e"), None, extra=viewer_args())
    try:
        yield running, upload_demo_data(running)
    finally:
        stop_server(running)


def run_browser(name: str, config: dict, timeout: float = 240) -> dict:
    """Run tests/e2e/ohif.spec.mjs with `config`; returns its JSON report, failing with its
    output when it fails."""
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OHIF_E2E": json.dumps(
        {**config, "chromium": CHROMIUM, "artifacts": str(artifacts)})}
    started = time.monotonic()
    done = subprocess.run(["node", "ohif.spec.mjs"], cwd=E2E, env=env, capture_output=True,
                          text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    assert done.returncode == 0, (
        f"browser test {name!r} failed after {elapsed:.0f} s (screenshots in {artifacts}):\n"
        f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    )
    report_path = artifacts / "report.json"
    return json.loads(report_path.read_text()) if report_path.is_file() else {}


def test_ohif_same_origin(data_server: tuple[Server, dict]) -> None:
    """Study list, search, a CT in the basic viewer (with quoted and unquoted multipart Accept),
    and the MPR layout, with no DICOMweb request failing."""
    server, expected = data_server
    report = run_browser("same-origin", {"url": server.origin + "/", **expected, "mpr": True,
                                         "rtdoseSeries": None})
    assert report.get("passed"), report


def served_dose_geometry(server: Server, study: str, series: str) -> dict:
    """The RTDOSE's geometry from this server's series metadata (the stored values), with the
    dose maximum (the phantom's centre) and a point of near-zero dose on the slice through it."""
    metadata = requests.get(f"{server.url}/studies/{study}/series/{series}/metadata",
                            timeout=30).json()[0]
    origin = [float(v) for v in metadata["00200032"]["Value"]]  # Image Position (Patient)
    offsets = [float(v) for v in metadata["3004000C"]["Value"]]  # Grid Frame Offset Vector
    spacing = offsets[1] - offsets[0]
    assert spacing == pytest.approx(gen.DOSE_PIXEL_MM) and len(offsets) == gen.DOSE_FRAMES
    peak = list(phantoms.SPHERE_CENTRE)
    corner = 5 * gen.DOSE_PIXEL_MM  # 5 voxels in from the grid's corner: about 0 Gy
    return {"origin": origin, "spacing": spacing, "frames": len(offsets), "peak": peak,
            "low": [origin[0] + corner, origin[1] + corner, peak[2]]}


def test_ohif_rtdose_colour_wash(data_server: tuple[Server, dict]) -> None:
    """The study's RTDOSE added as a layer of its CT viewport: a grayscale CT before; after, a
    dose volume with the geometry this server serves, and a wash whose colour at the dose
    maximum differs from its colour where the dose is near zero.

    OHIF 3.13.2 (and 3.14.0-beta.6) cannot show it. Its combineFrameInstance
    (platform/core/src/utils/combineFrameInstance.ts) takes its functional-group branch for
    any instance with NumberOfFrames > 1 and there sets every frame's Image Position (Patient)
    to the top-level one; the RTDOSE branch after it (Grid Frame Offset Vector) is reached only
    when NumberOfFrames is absent. The dose volume then has a slice spacing of 0 and no slices
    to show. The spec checks the volume's geometry as soon as it exists, so this expected
    failure costs seconds. With `strictZSpacingForVolumeViewport: false` cornerstone falls back
    to Slice Thickness, but OHIF then gives the layer a VOI of 0-1024 (no window in an RT Dose)
    and the Isodose map paints the whole grid one green (OHIF/Viewers issue 5463, "RTDOSE
    overlay shows green screen", open): the colour check here fails on that too. The test
    passes outright once the viewer shows the dose."""
    server, expected = data_server
    dose = served_dose_geometry(server, expected["ctStudy"], expected["rtdoseSeries"])
    artifacts = ARTIFACTS / "rtdose"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OHIF_E2E": json.dumps({
        "url": server.origin + "/", **expected, "mpr": False, "quotedVariant": False,
        "search": [], "dose": dose, "chromium": CHROMIUM, "artifacts": str(artifacts)})}
    done = subprocess.run(["node", "ohif.spec.mjs"], cwd=E2E, env=env, capture_output=True,
                          text=True, timeout=240)
    report = json.loads((artifacts / "report.json").read_text())
    if done.returncode == 0 and report.get("passed"):
        return
    volume = report.get("doseVolume")
    assert volume and volume["dimensions"][2] == dose["frames"], (
        report.get("error"), done.stdout[-4000:])
    assert volume["spacing"][2] == 0, f"the wash failed for another reason: {report.get('error')}"
    pytest.xfail("OHIF 3.13.2 places every RTDOSE frame at the first frame's position "
                 "(combineFrameInstance ignores Grid Frame Offset Vector): no colour wash")


def test_ohif_cross_origin(data_server: tuple[Server, dict],
                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """The viewer served by one server, the data at another origin: the study list and an image
    load without CORS errors."""
    server, expected = data_server
    viewer = start_server(tmp_path_factory.mktemp("viewer-only"), None,
                          extra=viewer_args("--viewer-dicomweb-root", server.url))
    try:
        config = requests.get(viewer.origin + "/app-config.js", timeout=10).text
        assert f'"qidoRoot": "{server.url}"' in config
        report = run_browser("cross-origin", {
            "url": viewer.origin + "/", **expected, "mpr": False, "crossOrigin": True,
            "rtdoseSeries": None,
            "dicomwebOrigin": server.origin})
        assert report.get("passed"), report
    finally:
        stop_server(viewer)

