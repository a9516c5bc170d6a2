"""Benchmark of the RT API over HTTP.

``python -m conformance.bench_rt --url http://127.0.0.1:8042/dicomweb [--quick] [--output F]``

(``--dvhset``: DVH accuracy and speed against dicompyler-core on the analytic test set, in
process, no server; see :mod:`conformance.bench_dvhset`.)

Stores the generator's analytic RT study (CT, RTSTRUCT, RTPLAN, RTDOSE; its own seed, so it
never clashes with other copies) through STOW-RS, then times, over HTTP:

* ``dvh_body``: the DVH of the BODY ROI (the largest one: a 300 mm cylinder over the CT
  extent) on the 128×128×49 dose grid;
* ``dose_on_ct``: the dose resampled onto the 512×512×N CT grid (float32 octet-stream);
* ``mask_body_on_ct``: the BODY rasterised on the CT grid (uint8 octet-stream).

Each is requested once cold (the first request also decodes the dose grid into the server's
cache), then ``repeats`` times; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from conformance import generate as gen

SEED = 9090


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _stow(url: str, datasets: Sequence[Dataset]) -> None:
    boundary = "rtbench" + uuid.uuid4().hex
    body = bytearray()
    for ds in datasets:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += _part10(ds) + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    response = requests.post(f"{url}/studies", data=bytes(body),
                             headers={"Content-Type": content_type}, timeout=600)
    if response.status_code not in (200, 202):
        raise RuntimeError(f"STOW failed: {response.status_code} {response.text[:500]}")


def _timed(fn: Callable[[], requests.Response], repeats: int) -> dict:
    start = time.perf_counter()
    first = fn()
    first_s = time.perf_counter() - start
    first.raise_for_status()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().raise_for_status()
        times.append(time.perf_counter() - start)
    return {"first_s": round(first_s, 4), "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4), "repeats": repeats, "response": first}


def run_rt_bench(url: str, *, quick: bool = False) -> dict:
    """Store the RT study at ``url`` (a DICOMweb root) and time the RT endpoints."""
    url = url.rstrip("/")
    rt = gen.RtStudy(seed=SEED, ct_slices=20 if quick else 60, mr_slices=0)
    repeats = 3 if quick else 7
    start = time.perf_counter()
    ct = gen.ct_series_datasets(rt)
    for i in range(0, len(ct), 20):
        _stow(url, ct[i:i + 20])
    _stow(url, [gen.rtstruct_dataset(rt), gen.rtplan_dataset(rt), gen.rtdose_dataset(rt)])
    upload_s = time.perf_counter() - start
    truth = gen.ground_truth(rt)
    series, sops = truth["series_instance_uids"], truth["sop_instance_uids"]
    study = truth["study_instance_uid"]
    dose_url = f"{url}/studies/{study}/series/{series['rtdose']}/instances/{sops['rtdose']}"
    struct_url = f"{url}/studies/{study}/series/{series['rtstruct']}/instances/{sops['rtstruct']}"
    session = requests.Session()
    body_number = truth["roi_numbers"]["BODY"]

    dvh = _timed(lambda: session.get(f"{dose_url}/rt/dose/dvh", params={
        "structures": sops["rtstruct"], "roi": body_number, "levels": "5,20,50"}, timeout=600),
        repeats)
    dvh_body = dvh.pop("response").json()
    dose_on_ct = _timed(lambda: session.get(f"{dose_url}/rt/dose/values", params={
        "series": series["ct"]}, headers={"Accept": "application/octet-stream"}, timeout=600),
        repeats)
    resampled = dose_on_ct.pop("response")
    mask = _timed(lambda: session.get(f"{struct_url}/rt/rois/{body_number}/mask", params={
        "series": series["ct"]}, headers={"Accept": "application/octet-stream"}, timeout=600),
        repeats)
    mask_response = mask.pop("response")
    return {
        "url": url,
        "quick": quick,
        "ct_slices": rt.ct_slices,
        "upload_s": round(upload_s, 3),
        "dvh_body": {**dvh, "volume_cc": dvh_body["total_volume_cc"],
                     "samples": dvh_body["samples"],
                     "sample_spacing_mm": dvh_body["sample_spacing_mm"],
                     "outside_grid_cc": dvh_body["outside_grid_cc"],
                     "analytic_volume_cc": truth["rois"]["BODY"]["volume_cm3"]},
        "dose_on_ct": {**dose_on_ct, "shape": resampled.headers.get("X-Grid-Shape"),
                       "bytes": len(resampled.content)},
        "mask_body_on_ct": {**mask, "shape": mask_response.headers.get("X-Grid-Shape"),
                            "voxels": int(mask_response.headers.get("X-Voxel-Count", 0))},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="DICOMweb root, e.g. http://HOST:PORT/dicomweb")
    parser.add_argument("--quick", action="store_true",
                        help="20 CT slices, 3 repeats (--dvhset: 2 mm contours only, 1 repeat)")
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    parser.add_argument("--dvhset", action="store_true",
                        help="DVHs of the analytic test set, ours and dicompyler-core's")
    parser.add_argument("--dicompyler-venv", type=Path, default=Path(".bench-venvs/dicompyler"),
                        help="venv for dicompyler-core 0.5.6 (created when missing)")
    parser.add_argument("--no-dicompyler", action="store_true",
                        help="--dvhset without dicompyler-core (ours only)")
    parser.add_argument("--reuse-dicompyler", type=Path, metavar="REPORT",
                        help="--dvhset: dicompyler-core's results from an earlier --output")
    args = parser.parse_args(argv)
    if args.dvhset:
        from conformance import bench_dvhset

        result = bench_dvhset.run_dvhset_bench(
            dicompyler_venv=None if args.no_dicompyler else args.dicompyler_venv,
            quick=args.quick, reuse=args.reuse_dicompyler)
        text = json.dumps(result, indent=2)
        print(text)
        print(bench_dvhset.render_table(result))
    elif args.url:
        result = run_rt_bench(args.url, quick=args.quick)
        text = json.dumps(result, indent=2)
        print(text)
    else:
        parser.error("--url is required (or --dvhset)")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
