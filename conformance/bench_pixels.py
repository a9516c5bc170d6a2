"""Pixel benchmark over HTTP only: frame transcoding, rendered images, MPR and its cache.

    python -m conformance.bench_pixels --url http://127.0.0.1:8042/dicomweb [--quick]

Measures (medians of repeats):

* frames/s of JPEG 2000 Lossless -> Explicit VR Little Endian frame transcoding (a
  multi-frame 256x256 MR instance encoded with pydicom's JPEG 2000 encoder, all frames in
  one request);
* rendered JPEG/s of one 512x512 CT slice (``/rendered``, sequential requests);
* time to the first reformat (sagittal PNG, volume load included) and to the next ones
  (coronal, axial; volume cached) of a 400-slice 256x256 MR series (``--quick``: 100
  slices). A cold volume is forced before each repeat by storing or deleting one extra
  slice, which changes the series version the server caches by;
* the volume cache's memory as reported by ``/volume``.

Data are generated deterministically (``conformance.generate``) and uploaded once; later
runs find them stored.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from io import BytesIO
from typing import Any

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEG2000Lossless

from conformance.generate import (
    RtStudy,
    ct_series_datasets,
    make_uid,
    mr_series_datasets,
)

ELE = "1.2.840.10008.1.2.1"
NATIVE_FRAMES = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
SEED = 7341
TIMEOUT = 300


def with_meta(ds: Dataset) -> Dataset:
    """A File Meta header for a generated dataset (Explicit VR Little Endian)."""
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ELE
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def to_bytes(ds: Dataset) -> bytes:
    with_meta(ds)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow(session: requests.Session, url: str, datasets: list[Dataset], batch: int = 50) -> None:
    for start in range(0, len(datasets), batch):
        boundary = "benchpixels" + str(start)
        body = bytearray()
        for ds in datasets[start : start + batch]:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += to_bytes(ds) + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        response = session.post(
            f"{url}/studies", data=bytes(body), timeout=TIMEOUT,
            headers={"Content-Type":
                     f'multipart/related; type="application/dicom"; boundary={boundary}'},
        )
        if response.status_code not in (200, 202):
            raise RuntimeError(f"STOW failed: {response.status_code} {response.text[:300]}")


def series_url(url: str, ds: Dataset) -> str:
    return f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def instance_url(url: str, ds: Dataset) -> str:
    return f"{series_url(url, ds)}/instances/{ds.SOPInstanceUID}"


def is_stored(session: requests.Session, url: str, ds: Dataset) -> bool:
    response = session.get(instance_url(url, ds) + "/metadata", timeout=TIMEOUT)
    return response.status_code == 200


def timed(session: requests.Session, target: str, accept: str | None = None) -> float:
    start = time.perf_counter()
    response = session.get(target, headers={"Accept": accept} if accept else {},
                           timeout=TIMEOUT)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"GET {target}: {response.status_code} {response.text[:300]}")
    return elapsed


# --- data -----------------------------------------------------------------------------


def j2k_multiframe(frames: int) -> Dataset:
    """A multi-frame MR-like instance (frames of the MR phantom) in JPEG 2000 Lossless."""
    slices = mr_series_datasets(RtStudy(seed=SEED, mr_slices=frames))
    ds = copy.deepcopy(slices[0])
    ds.SOPInstanceUID = make_uid(SEED, "bench-pixels", "j2k", frames)
    with_meta(ds)
    ds.SeriesInstanceUID = make_uid(SEED, "bench-pixels", "j2k-series", frames)
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(s.PixelData for s in slices)
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    return ds


def ct_slice() -> Dataset:
    return ct_series_datasets(RtStudy(seed=SEED, ct_slices=1))[0]


def mr_series(slices: int) -> list[Dataset]:
    return mr_series_datasets(RtStudy(seed=SEED + slices, mr_slices=slices))


def extra_slice(series: list[Dataset]) -> Dataset:
    """One more slice past the end of the series (same geometry)."""
    last = series[-1]
    gap = float(series[-1].ImagePositionPatient[2]) - float(series[-2].ImagePositionPatient[2])
    ds = copy.deepcopy(last)
    ds.SOPInstanceUID = make_uid(SEED, "bench-pixels", "extra", last.SOPInstanceUID)
    ds.InstanceNumber = int(last.InstanceNumber) + 1
    position = [float(v) for v in last.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1], round(position[2] + gap, 4)]
    return ds


# --- measurements -----------------------------------------------------------------------


def bench_transcode(session: requests.Session, url: str, quick: bool) -> dict[str, Any]:
    frames = 16 if quick else 48
    ds = j2k_multiframe(frames)
    if not is_stored(session, url, ds):
        stow(session, url, [ds])
    target = instance_url(url, ds) + "/frames/" + ",".join(str(n) for n in range(1, frames + 1))
    timed(session, target, NATIVE_FRAMES)  # warm-up
    times = [timed(session, target, NATIVE_FRAMES) for _ in range(3 if quick else 5)]
    median = statistics.median(times)
    return {"frames": frames, "frame_size": "256x256x16 bit", "median_s": median,
            "frames_per_s": frames / median}


def bench_rendered(session: requests.Session, url: str, quick: bool) -> dict[str, Any]:
    ds = ct_slice()
    if not is_stored(session, url, ds):
        stow(session, url, [ds])
    target = instance_url(url, ds) + "/rendered"
    timed(session, target, "image/jpeg")
    rates = []
    count = 10 if quick else 30
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            timed(session, target, "image/jpeg")
        rates.append(count / (time.perf_counter() - start))
    return {"size": "512x512", "rendered_per_s": statistics.median(rates)}


def bench_mpr(session: requests.Session, url: str, quick: bool) -> dict[str, Any]:
    slices = 100 if quick else 400
    series = mr_series(slices)
    base = series_url(url, series[0])
    probe = session.get(base + "/volume", timeout=TIMEOUT)
    stored = probe.status_code == 200 and probe.json()["size"][2] in (slices, slices + 1)
    if not stored:
        stow(session, url, series)
    extra = extra_slice(series)
    firsts, nexts = [], []
    for _ in range(3 if quick else 5):
        # A new series version: the next reformat must load the volume again.
        if is_stored(session, url, extra):
            session.delete(instance_url(url, extra), timeout=TIMEOUT)
        else:
            stow(session, url, [extra])
        start = time.perf_counter()
        response = session.get(base + "/mpr/sagittal", headers={"Accept": "image/png"},
                                timeout=TIMEOUT)
        firsts.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"MPR failed: {response.status_code} {response.text[:300]}")
        if response.headers.get("X-Volume-Cache") not in (None, "miss"):
            raise RuntimeError("the first reformat did not load the volume")
        for plane in ("coronal", "axial", "sagittal?index=100"):
            nexts.append(timed(session, f"{base}/mpr/{plane}", "image/png"))
    volume = session.get(base + "/volume", timeout=TIMEOUT).json()
    return {
        "slices": volume["size"][2],
        "size": f"{volume['size'][0]}x{volume['size'][1]}",
        "first_reformat_s": statistics.median(firsts),
        "next_reformat_s": statistics.median(nexts),
        "volume_cache_bytes": volume.get("cache", {}).get("bytes"),
        "volume_cache_items": volume.get("cache", {}).get("items"),
    }


def run_pixel_bench(url: str, *, quick: bool) -> dict:
    """All pixel measurements against the DICOMweb root ``url``; a failed section is
    reported with its error, not raised."""
    url = url.rstrip("/")
    session = requests.Session()
    report: dict[str, Any] = {"url": url, "quick": quick}
    for name, section in (("transcode_j2k_to_native", bench_transcode),
                          ("rendered_jpeg", bench_rendered), ("mpr", bench_mpr)):
        try:
            report[name] = section(session, url, quick)
        except (requests.RequestException, RuntimeError, KeyError, ValueError) as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return report


def render_table(report: dict) -> str:
    def value(section: str, key: str, unit: str, scale: float = 1.0, digits: int = 1) -> str:
        data = report.get(section, {})
        if key not in data or data[key] is None:
            return data.get("error", "n/a")
        return f"{data[key] * scale:.{digits}f} {unit}"

    mpr = report.get("mpr", {})
    label = f"{mpr.get('slices', '?')} slices {mpr.get('size', '')}"
    rows = [
        ("JPEG 2000 -> native frames", value("transcode_j2k_to_native", "frames_per_s",
                                             "frames/s")),
        ("rendered JPEG 512x512", value("rendered_jpeg", "rendered_per_s", "images/s")),
        (f"first reformat ({label})", value("mpr", "first_reformat_s", "ms", 1000)),
        ("next reformat (cached)", value("mpr", "next_reformat_s", "ms", 1000)),
        ("volume cache memory", value("mpr", "volume_cache_bytes", "MB", 1e-6)),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  median", f"{'-' * width}  {'-' * 16}"]
    lines += [f"{name:<{width}}  {figure}" for name, figure in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicomweb")
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    report = run_pixel_bench(args.url, quick=args.quick)
    print(render_table(report))
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(report, fp, indent=2)
    return 0 if not any("error" in v for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
