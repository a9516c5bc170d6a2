"""Black-box DICOMweb benchmark: STOW, QIDO, series metadata, frames, rendered, retrieve.

Works against any DICOMweb server using plain HTTP only, e.g.

    python -m conformance.bench --url http://127.0.0.1:8042/dicomweb --json ours.json
    python -m conformance.bench --url http://127.0.0.1:8043/dicom-web --label orthanc

Benchmark data (``conformance.benchdata``) is generated in memory, uploaded once and detected
on later runs (PatientID ``BENCH*``). Figures are medians / p95 because machines are noisy; a
feature the server lacks is reported as "n/a", never as a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from conformance import benchdata
from conformance.benchdata import BenchInstance

DICOM_JSON = "application/dicom+json"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
SERIES_ACCEPTS = (
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/dicom"',
)
STOW_BATCH_SIZE = 32
STOW_CONCURRENT_CLIENTS = 4
FRAME_CONCURRENT_CLIENTS = 6
QIDO_PAGE_SIZE = 500
REQUEST_TIMEOUT_S = 120.0
MB = 1_000_000
FAILED_SOP_SEQUENCE = "00081198"


# ---------------------------------------------------------------- results


@dataclass
class LatencyResult:
    """Repeated single request: latency percentiles, rows (QIDO) and body size."""

    name: str
    path: str
    supported: bool = True
    status: int | None = None
    repeats: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    rows: int | None = None
    body_bytes: int | None = None  # decoded size
    wire_bytes: int | None = None  # as sent (Content-Length), compressed or not
    content_encoding: str | None = None
    note: str = ""


@dataclass
class ThroughputResult:
    """Load run: items/s over wall time, plus per-request latency percentiles."""

    name: str
    clients: int
    supported: bool = True
    requests_ok: int = 0
    errors: int = 0
    items: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    items_per_s: float | None = None
    mb_per_s: float | None = None
    median_items_per_s: float | None = None  # median over requests, scaled by clients
    p50_ms: float | None = None
    p95_ms: float | None = None
    note: str = ""


@dataclass
class DatasetInfo:
    small_studies: int
    small_instances: int
    mr_slices: int
    mr_bytes: int = 0
    uploaded_bytes: int = 0
    present_before: bool = False
    uploaded_instances: int = 0


@dataclass
class ScaleResult:
    """Per-request cost of a probe set at the initial and the enlarged database size."""

    studies_before: int  # bench studies (incl. the MR one) found on the server
    studies_after: int | None = None
    before: list[LatencyResult] = field(default_factory=list)
    after: list[LatencyResult] = field(default_factory=list)
    stow: list[ThroughputResult] = field(default_factory=list)  # upload of the added studies
    ratios: dict[str, float | None] = field(default_factory=dict)
    note: str = ""


@dataclass
class BenchReport:
    label: str
    url: str
    started_at: str
    config: dict[str, Any]
    environment: dict[str, Any]
    dataset: DatasetInfo | None = None
    stow: list[ThroughputResult] = field(default_factory=list)
    qido: list[LatencyResult] = field(default_factory=list)
    metadata: LatencyResult | None = None
    metadata_gzip: LatencyResult | None = None
    frames: list[ThroughputResult] = field(default_factory=list)
    rendered: ThroughputResult | None = None
    rendered_repeated: ThroughputResult | None = None
    rendered_native: ThroughputResult | None = None
    series_retrieve: ThroughputResult | None = None
    series_retrieve_native: ThroughputResult | None = None
    scale: ScaleResult | None = None
    cleanup: dict[str, Any] | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)
    total_seconds: float = 0.0


@dataclass
class BenchOptions:
    url: str
    studies: int
    mr_slices: int
    repeat: int
    query_budget_s: float
    frame_seconds: float
    rendered_seconds: float
    retrieve_repeats: int
    scale: bool
    scale_add: int
    reupload: bool
    cleanup: bool
    accept_encoding: str
    label: str
    json_path: Path | None


# ---------------------------------------------------------------- http helpers


ACCEPT_ENCODING = {"value": "gzip, deflate"}  # set from --accept-encoding before any request


def make_session(pool_size: int = 8) -> requests.Session:
    session = requests.Session()
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING["value"]
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def percentile_ms(seconds: Sequence[float], q: float) -> float | None:
    if not seconds:
        return None
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 2)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def count_rows(response: requests.Response) -> int | None:
    if response.status_code == 204 or not response.content:
        return 0
    try:
        body = response.json()
    except ValueError:
        return None
    return len(body) if isinstance(body, list) else None


def encode_multipart(parts: Iterable[bytes], part_type: str) -> tuple[bytes, str]:
    """multipart/related body for STOW; returns (body, Content-Type header)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return b"".join(chunks), content_type


def stow_failures(response: requests.Response) -> int:
    """Number of FailedSOPSequence items in a STOW answer (0 if absent/unparseable)."""
    try:
        body = response.json()
    except ValueError:
        return 0
    if not isinstance(body, dict):
        return 0
    return len(body.get(FAILED_SOP_SEQUENCE, {}).get("Value", []) or [])


class SessionPerThread:
    """One keep-alive session per worker thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = make_session()
            self._local.session = session
        return session


# ---------------------------------------------------------------- measurement primitives


@dataclass
class Sample:
    """One request of a load run."""

    seconds: float
    ok: bool
    items: int
    payload_bytes: int


def summarise(name: str, clients: int, samples: list[Sample], wall_s: float) -> ThroughputResult:
    good = [s for s in samples if s.ok]
    result = ThroughputResult(name=name, clients=clients, seconds=round(wall_s, 3))
    result.requests_ok = len(good)
    result.errors = len(samples) - len(good)
    result.items = sum(s.items for s in good)
    result.payload_bytes = sum(s.payload_bytes for s in good)
    if not good or wall_s <= 0:
        result.supported = False
        result.note = f"no successful request ({result.errors} errors)"
        return result
    result.items_per_s = round(result.items / wall_s, 2)
    result.mb_per_s = round(result.payload_bytes / wall_s / MB, 2)
    per_request_rates = [s.items / s.seconds for s in good if s.seconds > 0]
    if per_request_rates:
        result.median_items_per_s = round(statistics.median(per_request_rates) * clients, 2)
    latencies = [s.seconds for s in good]
    result.p50_ms = percentile_ms(latencies, 50)
    result.p95_ms = percentile_ms(latencies, 95)
    return result


def run_for_duration(
    request_once: Callable[[requests.Session, int], Sample],
    clients: int,
    seconds: float,
    session_headers: dict[str, str] | None = None,
) -> tuple[list[Sample], float]:
    """Each client calls request_once(session, k) with k = its own counter until time is up."""
    deadline = time.perf_counter() + seconds

    def client_loop(client_index: int) -> list[Sample]:
        session = make_session(1)
        session.headers.update(session_headers or {})
        samples: list[Sample] = []
        k = client_index
        while time.perf_counter() < deadline:
            samples.append(request_once(session, k))
            k += clients
        return samples

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(client_loop, range(clients)))
    wall_s = time.perf_counter() - started
    return [s for samples in per_client for s in samples], wall_s


def measure_latency(
    name: str,
    session: requests.Session,
    base_url: str,
    path: str,
    accept: str,
    repeats: int,
    budget_s: float,
) -> LatencyResult:
    """GET path repeatedly (at least 3 times, at most `repeats`, within about budget_s)."""
    result = LatencyResult(name=name, path=path)
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    try:
        for attempt in range(max(repeats, 1)):
            started = time.perf_counter()
            response = session.get(
                f"{base_url}/{path}", headers={"Accept": accept}, timeout=REQUEST_TIMEOUT_S
            )
            elapsed = time.perf_counter() - started
            result.status = response.status_code
            if response.status_code >= 400:
                result.supported = False
                result.note = f"HTTP {response.status_code}"
                return result
            timings.append(elapsed)
            if attempt == 0:
                result.body_bytes = len(response.content)
                result.content_encoding = response.headers.get("Content-Encoding")
                length = response.headers.get("Content-Length")
                result.wire_bytes = int(length) if length and length.isdigit() else None
                if accept == DICOM_JSON:
                    result.rows = count_rows(response)
            if attempt >= 2 and time.perf_counter() > deadline:
                break
    except requests.RequestException as exc:
        result.supported = bool(timings)
        result.note = f"{type(exc).__name__}: {exc}"[:200]
    result.repeats = len(timings)
    result.p50_ms = percentile_ms(timings, 50)
    result.p95_ms = percentile_ms(timings, 95)
    return result


# ---------------------------------------------------------------- data presence and upload


def present_bench_study_uids(session: requests.Session, base_url: str) -> set[str]:
    """StudyInstanceUIDs of all studies with PatientID BENCH* (paged QIDO)."""
    found: set[str] = set()
    offset = 0
    while True:
        # literal "*": some servers (Orthanc 1.10) do not decode a percent-encoded "%2A"
        query = (
            f"PatientID={benchdata.BENCH_PATIENT_PREFIX}*&includefield=0020000D"
            f"&limit={QIDO_PAGE_SIZE}&offset={offset}"
        )
        response = session.get(
            f"{base_url}/studies?{query}",
            headers={"Accept": DICOM_JSON},
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code == 204:
            return found
        response.raise_for_status()
        page = {
            uid for item in response.json() for uid in item.get("0020000D", {}).get("Value", [])
        }
        if not page - found:  # empty page, or a server that ignores offset
            return found
        found |= page
        offset += len(page)


def series_instance_uids(
    session: requests.Session, base_url: str, study_uid: str, series_uid: str
) -> list[str]:
    """SOPInstanceUIDs of a series sorted by InstanceNumber ([] if absent)."""
    response = session.get(
        f"{base_url}/studies/{study_uid}/series/{series_uid}/instances",
        params={"includefield": "00200013"},
        headers={"Accept": DICOM_JSON},
        timeout=REQUEST_TIMEOUT_S,
    )
    if response.status_code in (204, 404):
        return []
    response.raise_for_status()

    def first_value(item: dict[str, Any], tag: str) -> Any:
        values = item.get(tag, {}).get("Value", [None])
        return values[0] if values else None

    items = response.json()
    items.sort(key=lambda item: int(first_value(item, "00200013") or 0))
    return [uid for uid in (first_value(item, "00080018") for item in items) if uid]


def batched(instances: Sequence[BenchInstance], size: int) -> list[Sequence[BenchInstance]]:
    return [instances[i : i + size] for i in range(0, len(instances), size)]


def stow_upload(
    name: str, base_url: str, instances: Sequence[BenchInstance], clients: int
) -> ThroughputResult:
    """POST {url}/studies in batches of STOW_BATCH_SIZE from `clients` concurrent clients."""
    sessions = SessionPerThread()

    def post_batch(batch: Sequence[BenchInstance]) -> Sample:
        body, content_type = encode_multipart((i.data for i in batch), "application/dicom")
        started = time.perf_counter()
        try:
            response = sessions.get().post(
                f"{base_url}/studies",
                data=body,
                headers={"Content-Type": content_type, "Accept": DICOM_JSON},
                timeout=REQUEST_TIMEOUT_S,
            )
        except requests.RequestException:
            return Sample(time.perf_counter() - started, False, 0, 0)
        elapsed = time.perf_counter() - started
        ok = response.status_code in (200, 202) and stow_failures(response) == 0
        return Sample(elapsed, ok, len(batch), sum(len(i.data) for i in batch))

    batches = batched(instances, STOW_BATCH_SIZE)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = list(pool.map(post_batch, batches))
    return summarise(name, clients, samples, time.perf_counter() - started)


def split_half(items: list[BenchInstance]) -> tuple[list[BenchInstance], list[BenchInstance]]:
    middle = (len(items) // 2 // STOW_BATCH_SIZE) * STOW_BATCH_SIZE or len(items) // 2
    return items[:middle], items[middle:]


def upload_missing(
    session: requests.Session,
    options: BenchOptions,
    first_study: int,
    study_count: int,
    include_mr: bool = True,
) -> tuple[DatasetInfo, list[ThroughputResult]]:
    """Generate and STOW whatever bench data is missing; the upload itself is the STOW bench.

    Each data set (small studies, MR series) is split in halves: the first goes up with one
    client, the second with STOW_CONCURRENT_CLIENTS clients.
    """
    study_range = range(first_study, first_study + study_count)
    info = DatasetInfo(
        small_studies=study_count,
        small_instances=benchdata.small_study_instance_count(study_count, first_study),
        mr_slices=options.mr_slices if include_mr else 0,
    )
    present = set() if options.reupload else present_bench_study_uids(session, options.url)
    missing_studies = [i for i in study_range if benchdata.study_uid(i) not in present]
    rt_context = benchdata.rt_study_context(info.mr_slices)
    rt_present = (
        bool(info.mr_slices)
        and not options.reupload
        and len(
            series_instance_uids(
                session, options.url, rt_context.study.uid, rt_context.series_uid("mr")
            )
        )
        == info.mr_slices
    )
    small = [inst for i in missing_studies for inst in benchdata.small_study(i)]
    rt = benchdata.rt_study(info.mr_slices) if info.mr_slices else []
    info.mr_bytes = sum(len(i.data) for i in rt)
    if rt_present:
        rt = []
    info.uploaded_bytes = sum(len(i.data) for i in (*small, *rt))
    info.present_before = not small and not rt
    info.uploaded_instances = len(small) + len(rt)

    results: list[ThroughputResult] = []
    note = "n/a: data already present (use --reupload)"
    if small:
        single, concurrent = split_half(small)
        for clients, part in ((1, single), (STOW_CONCURRENT_CLIENTS, concurrent)):
            if part:
                results.append(stow_upload("stow small", options.url, part, clients))
    else:
        results += [ThroughputResult("stow small", c, False, note=note)
                    for c in (1, STOW_CONCURRENT_CLIENTS)]
    if info.mr_slices:
        # The RT study as a planning system sends it: one client, CT, MR, then RT objects.
        results.append(
            stow_upload("stow rt", options.url, rt, 1) if rt
            else ThroughputResult("stow rt", 1, False, note=note)
        )
    return info, results


# ---------------------------------------------------------------- benchmark sections


@dataclass
class Targets:
    """UIDs the read benchmarks address."""

    small_study_uid: str
    small_series_uid: str
    patient_id: str
    mr_study_uid: str
    mr_series_uid: str
    mr_instance_uids: list[str]
    ct_series_uid: str = ""
    ct_instance_uid: str = ""  # the middle CT slice (512x512): the rendered benchmark
    ct_instance_uids: list[str] = field(default_factory=list)

    @property
    def mr_series_path(self) -> str:
        return f"studies/{self.mr_study_uid}/series/{self.mr_series_uid}"


def qido_paths(targets: Targets) -> list[tuple[str, str]]:
    return [
        (
            "OHIF study list",
            "studies?limit=101&offset=0&fuzzymatching=true"
            "&includefield=00081030%2C00080060%2C00080090%2C00100030",
        ),
        ("PatientName=S*", "studies?PatientName=S*"),
        ("ModalitiesInStudy=MR", "studies?ModalitiesInStudy=MR"),
        ("StudyDate range", "studies?StudyDate=20200101-20221231"),
        ("PatientID", f"studies?00100020={targets.patient_id}"),
        ("study series", f"studies/{targets.small_study_uid}/series"),
        ("MR series instances", f"{targets.mr_series_path}/instances"),
    ]


def bench_qido(
    session: requests.Session, options: BenchOptions, targets: Targets
) -> list[LatencyResult]:
    return [
        measure_latency(
            name, session, options.url, path, DICOM_JSON, options.repeat, options.query_budget_s
        )
        for name, path in qido_paths(targets)
    ]


def bench_metadata(
    session: requests.Session, options: BenchOptions, targets: Targets, encoding: str | None = None
) -> LatencyResult:
    """Series metadata of the MR series; with `encoding`, as a browser asks (compressed)."""
    if encoding:
        session = make_session()
        session.headers["Accept-Encoding"] = encoding
    return measure_latency(
        f"MR series metadata ({encoding})" if encoding else "MR series metadata",
        session,
        options.url,
        f"{targets.mr_series_path}/metadata",
        DICOM_JSON,
        min(options.repeat, 10),
        options.query_budget_s * 2,
    )


def fetch_once(url: str, accept: str, items: int = 1) -> Callable[[requests.Session], Sample]:
    def request(session: requests.Session) -> Sample:
        started = time.perf_counter()
        try:
            response = session.get(url, headers={"Accept": accept}, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException:
            return Sample(time.perf_counter() - started, False, 0, 0)
        elapsed = time.perf_counter() - started
        ok = response.status_code == 200 and len(response.content) > 0
        return Sample(elapsed, ok, items, len(response.content))

    return request


def bench_frames(
    options: BenchOptions, targets: Targets, clients: int, identity: bool = False
) -> ThroughputResult:
    """Frame 1 of each MR instance in turn, for options.frame_seconds.

    identity=True forces ``Accept-Encoding: identity`` (no HTTP compression of pixel data).
    """
    name = "frames identity" if identity else "frames"
    uids = targets.mr_instance_uids
    if not uids:
        return ThroughputResult(name, clients, False, note="n/a: MR series not found")
    session_headers = {"Accept-Encoding": "identity"} if identity else {}
    base = f"{options.url}/{targets.mr_series_path}/instances"

    def request_once(session: requests.Session, k: int) -> Sample:
        return fetch_once(f"{base}/{uids[k % len(uids)]}/frames/1", FRAME_ACCEPT)(session)

    probe = make_session().get(
        f"{base}/{uids[0]}/frames/1",
        headers={"Accept": FRAME_ACCEPT, **session_headers},
        timeout=REQUEST_TIMEOUT_S,
    )
    samples, wall_s = run_for_duration(
        request_once, clients, options.frame_seconds, session_headers
    )
    result = summarise(name, clients, samples, wall_s)
    if probe.headers.get("Content-Encoding"):
        result.note = f"Content-Encoding: {probe.headers['Content-Encoding']}"
    return result


WRK_SCRIPT = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


def bench_frames_wrk(options: BenchOptions, targets: Targets, clients: int) -> ThroughputResult:
    """Frames fetched by wrk, a native HTTP load generator, when it is installed: the Python
    client costs as much CPU per request as a fast server does, so on a small machine it
    measures itself. Same URLs, Accept header and duration as `bench_frames`."""
    from urllib.parse import urlsplit

    if not targets.mr_instance_uids:
        return ThroughputResult("frames (wrk)", clients, False, note="n/a: MR series not found")
    base_path = f"{urlsplit(options.url).path}/{targets.mr_series_path}/instances"
    paths = ",".join(f'"{base_path}/{uid}/frames/1"' for uid in targets.mr_instance_uids)
    return run_wrk(options, "frames (wrk)", clients, options.frame_seconds,
                   WRK_SCRIPT % paths, FRAME_ACCEPT)


WRK_RENDERED_SCRIPT = """
instances = {%s}
counter = 0
request = function()
  counter = counter + 1
  local instance = instances[(counter %% #instances) + 1]
  return wrk.format("GET", instance .. "/rendered?window=40," .. (%d + counter) .. ",linear")
end
"""


def bench_rendered_wrk(options: BenchOptions, targets: Targets) -> ThroughputResult:
    """`bench_rendered` (each image new: slices in turn, each with its own window width)
    fetched by wrk over one connection: the Python client's own cost per request is about
    the server's, so its row measures both."""
    from urllib.parse import urlsplit

    if not targets.mr_instance_uids or not targets.ct_instance_uids:
        return ThroughputResult("rendered jpeg (wrk)", 1, False, note="n/a: RT study not found")
    series = (f"{urlsplit(options.url).path}/studies/{targets.mr_study_uid}/series/"
              f"{targets.ct_series_uid}/instances")
    instances = ",".join(f'"{series}/{uid}"' for uid in targets.ct_instance_uids)
    first_width = 10_000 + int(time.time()) % 1_000_000  # widths no earlier request asked for
    return run_wrk(options, "rendered jpeg (wrk)", 1, options.rendered_seconds,
                   WRK_RENDERED_SCRIPT % (instances, first_width), "image/jpeg")


def run_wrk(options: BenchOptions, name: str, clients: int, seconds: float, script_text: str,
            accept: str) -> ThroughputResult:
    """Requests/s of wrk running `script_text` (n/a when wrk is not installed)."""
    import re
    import shutil
    import subprocess
    import tempfile
    from urllib.parse import urlsplit

    wrk = shutil.which("wrk")
    if not wrk:
        return ThroughputResult(name, clients, False, note="n/a: wrk not installed")
    split = urlsplit(options.url)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(script_text)
    command = [
        wrk, f"-t{min(clients, 2)}", f"-c{clients}", f"-d{max(1, int(seconds))}s",
        "-H", f"Accept: {accept}", "-H", f"Accept-Encoding: {options.accept_encoding}",
        "-s", script.name, f"{split.scheme}://{split.netloc}",
    ]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not rate or errors:
        return ThroughputResult(name, clients, False, note=f"n/a: {output.strip()[-200:]}")
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    per_s = float(rate.group(1))
    return ThroughputResult(
        name, clients, True, items_per_s=per_s, median_items_per_s=per_s,
        p50_ms=float(latency.group(1)) * scale[latency.group(2)] if latency else None,
        note="native client (mean latency)",
    )


def bench_all_frames(options: BenchOptions, targets: Targets) -> list[ThroughputResult]:
    """1 and N clients; repeated without HTTP compression if the server gzips pixel data."""
    results: list[ThroughputResult] = []
    for identity in (False, True):
        for clients in (1, FRAME_CONCURRENT_CLIENTS):
            log(f"frames: {clients} client(s), {options.frame_seconds:g} s, identity={identity}")
            results.append(bench_frames(options, targets, clients, identity))
        compressed = any("Content-Encoding" in r.note for r in results)
        if not compressed or options.accept_encoding == "identity":
            break
    for clients in (1, FRAME_CONCURRENT_CLIENTS):
        log(f"frames (wrk): {clients} connection(s), {options.frame_seconds:g} s")
        results.append(bench_frames_wrk(options, targets, clients))
    return results


def bench_rendered(
    options: BenchOptions, targets: Targets, repeated: bool = False
) -> ThroughputResult:
    """JPEG rendering of the 512x512 CT slices, 1 client (after a support probe).

    Each request asks for an image not asked before (slices in turn, each with its own
    window width), so a server that keeps rendered images gains nothing; `repeated` asks for
    the middle slice again and again, as a viewer reopening a study does."""
    name = "rendered jpeg (repeated)" if repeated else "rendered jpeg"
    if not targets.mr_instance_uids:
        return ThroughputResult(name, 1, False, note="n/a: RT study not found")
    series = f"{options.url}/studies/{targets.mr_study_uid}/series/{targets.ct_series_uid}"
    url = f"{series}/instances/{targets.ct_instance_uid}/rendered"
    probe = make_session().get(url, headers={"Accept": "image/jpeg"}, timeout=REQUEST_TIMEOUT_S)
    if probe.status_code >= 400:
        note = f"not supported (HTTP {probe.status_code})"
        return ThroughputResult(name, 1, False, note=note)
    slices = targets.ct_instance_uids or [targets.ct_instance_uid]

    def request_once(session: requests.Session, k: int) -> Sample:
        if repeated:
            return fetch_once(url, "image/jpeg")(session)
        instance = slices[k % len(slices)]
        fresh = f"{series}/instances/{instance}/rendered?window=40,{400 + k},linear"
        return fetch_once(fresh, "image/jpeg")(session)

    samples, wall_s = run_for_duration(request_once, 1, options.rendered_seconds)
    result = summarise(name, 1, samples, wall_s)
    if not probe.content.startswith(b"\xff\xd8"):
        result.note = f"answer is not JPEG ({probe.headers.get('Content-Type')})"
    return result


def bench_series_retrieve(options: BenchOptions, targets: Targets) -> ThroughputResult:
    """Whole MR series as multipart/related application/dicom; items = instances."""
    url = f"{options.url}/{targets.mr_series_path}"
    session = make_session()
    instances = len(targets.mr_instance_uids)
    for accept in SERIES_ACCEPTS:
        samples = [fetch_once(url, accept, instances)(session)]
        if samples[0].ok:
            break
    else:
        return ThroughputResult("series retrieve", 1, False, note="n/a: retrieve failed")
    samples = []
    started = time.perf_counter()
    for _ in range(max(options.retrieve_repeats, 1)):
        samples.append(fetch_once(url, accept, instances)(session))
    result = summarise("series retrieve", 1, samples, time.perf_counter() - started)
    result.note = f"Accept: {accept}"
    return result


#: Native-client retrieves per run: each takes tens of milliseconds.
NATIVE_RETRIEVES = 10


def bench_series_retrieve_curl(options: BenchOptions, targets: Targets) -> ThroughputResult:
    """The series retrieve fetched by curl, when it is installed: above ~400 MB/s the Python
    client's own reading (10 KiB pieces through http.client) is what the Python row
    measures, for any server. Median of the per-request rates; same URL and Accept."""
    import shutil
    import subprocess

    name = "series retrieve (curl)"
    curl = shutil.which("curl")
    if not curl or not targets.mr_instance_uids:
        return ThroughputResult(name, 1, False, note="n/a: curl not installed")
    url = f"{options.url}/{targets.mr_series_path}"
    command = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
               "-H", f"Accept: {SERIES_ACCEPTS[-1]}",
               "-H", f"Accept-Encoding: {options.accept_encoding}", url]
    samples: list[Sample] = []
    started = time.perf_counter()
    for _ in range(NATIVE_RETRIEVES + 1):  # the first one warms the server's caches
        status, size, seconds = subprocess.run(
            command, capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S).stdout.split()
        samples.append(Sample(float(seconds), status == "200" and int(size) > 0,
                              len(targets.mr_instance_uids), int(size)))
    result = summarise(name, 1, samples[1:], time.perf_counter() - started)
    if result.supported:
        rates = [s.payload_bytes / s.seconds / MB for s in samples[1:] if s.ok and s.seconds]
        result.mb_per_s = round(statistics.median(rates), 2)
        result.note = "native client (median of the per-request rates)"
    return result


def scale_probe(
    session: requests.Session, options: BenchOptions, targets: Targets
) -> list[LatencyResult]:
    probe_names = {"OHIF study list", "PatientID", "StudyDate range", "MR series instances"}
    results = [
        measure_latency(
            name, session, options.url, path, DICOM_JSON, options.repeat, options.query_budget_s
        )
        for name, path in qido_paths(targets)
        if name in probe_names
    ]
    if targets.mr_instance_uids:
        uid = targets.mr_instance_uids[0]
        path = f"{targets.mr_series_path}/instances/{uid}/frames/1"
        frame = measure_latency(
            "frame", session, options.url, path, FRAME_ACCEPT, options.repeat * 3, 5.0
        )
        results.append(frame)
    return results


def bench_scale(session: requests.Session, options: BenchOptions, targets: Targets) -> ScaleResult:
    def count_studies() -> int:
        return len(present_bench_study_uids(session, options.url))

    scale = ScaleResult(studies_before=count_studies())
    scale.before = scale_probe(session, options, targets)
    if options.scale_add <= 0:
        scale.note = "single size (--scale-add 0)"
        return scale
    _, scale.stow = upload_missing(
        session, options, options.studies, options.scale_add, include_mr=False
    )
    scale.studies_after = count_studies()
    scale.after = scale_probe(session, options, targets)
    for before, after in zip(scale.before, scale.after, strict=True):
        scale.ratios[before.name] = ratio(after.p50_ms, before.p50_ms)
    return scale


def bench_cleanup(session: requests.Session, options: BenchOptions) -> dict[str, Any]:
    """DELETE {url}/studies/{uid} for every bench study (stops at the first refusal)."""
    uids = sorted(present_bench_study_uids(session, options.url))
    deleted = 0
    started = time.perf_counter()
    for uid in uids:
        response = session.delete(f"{options.url}/studies/{uid}", timeout=REQUEST_TIMEOUT_S)
        if response.status_code >= 400:
            note = f"DELETE not supported (HTTP {response.status_code})"
            return {"supported": False, "deleted": deleted, "note": note}
        deleted += 1
    return {
        "supported": True,
        "deleted": deleted,
        "seconds": round(time.perf_counter() - started, 2),
    }


def resolve_targets(session: requests.Session, options: BenchOptions) -> Targets:
    rt = benchdata.rt_study_context(options.mr_slices)
    uids = series_instance_uids(session, options.url, rt.study.uid, rt.series_uid("mr"))
    return Targets(
        small_study_uid=benchdata.study_uid(0),
        small_series_uid=f"{benchdata.study_uid(0)}.1",
        patient_id=benchdata.patient_id(0),
        mr_study_uid=rt.study.uid,
        mr_series_uid=rt.series_uid("mr"),
        mr_instance_uids=uids,
        ct_series_uid=rt.series_uid("ct"),
        ct_instance_uid=rt.instance_uid("ct", rt.ct_slices // 2),
        ct_instance_uids=[rt.instance_uid("ct", i) for i in range(rt.ct_slices)],
    )


def guarded(default: Any, section: Callable[[], Any]) -> Any:
    """Run one benchmark section; an unexpected failure becomes an n/a result, not a crash."""
    try:
        return section()
    except Exception as exc:  # robustness against arbitrary servers
        note = f"n/a: {type(exc).__name__}: {exc}"[:300]
        print(f"  ! {note}", file=sys.stderr)
        if isinstance(default, (LatencyResult, ThroughputResult)):
            default.supported = False
            default.note = note
        return default


def run_bench(options: BenchOptions) -> BenchReport:
    started = time.perf_counter()
    report = BenchReport(
        label=options.label,
        url=options.url,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        environment={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    )
    session = make_session()
    log("data: checking / uploading bench data")
    report.dataset, report.stow = upload_missing(session, options, 0, options.studies)
    targets = resolve_targets(session, options)
    log(f"qido: {len(qido_paths(targets))} queries")
    report.qido = guarded([], lambda: bench_qido(session, options, targets))
    log("metadata")
    report.metadata = guarded(
        LatencyResult("MR series metadata", ""), lambda: bench_metadata(session, options, targets)
    )
    report.metadata_gzip = guarded(
        LatencyResult("MR series metadata (gzip)", ""),
        lambda: bench_metadata(session, options, targets, "gzip"),
    )
    report.frames = guarded([], lambda: bench_all_frames(options, targets))
    log("rendered")
    report.rendered = guarded(
        ThroughputResult("rendered jpeg", 1), lambda: bench_rendered(options, targets)
    )
    report.rendered_repeated = guarded(
        ThroughputResult("rendered jpeg (repeated)", 1),
        lambda: bench_rendered(options, targets, repeated=True),
    )
    report.rendered_native = guarded(
        ThroughputResult("rendered jpeg (wrk)", 1, False, note="n/a: rendered not supported"),
        lambda: bench_rendered_wrk(options, targets) if report.rendered.supported
        else ThroughputResult("rendered jpeg (wrk)", 1, False, note="n/a: rendered not supported"),
    )
    log("series retrieve")
    report.series_retrieve = guarded(
        ThroughputResult("series retrieve", 1), lambda: bench_series_retrieve(options, targets)
    )
    report.series_retrieve_native = guarded(
        ThroughputResult("series retrieve (curl)", 1),
        lambda: bench_series_retrieve_curl(options, targets),
    )
    if options.scale:
        log(f"scale: probe, add {options.scale_add} studies, probe again")
        report.scale = guarded(None, lambda: bench_scale(session, options, targets))
    if options.cleanup:
        log("cleanup")
        report.cleanup = guarded(
            {"supported": False, "note": "failed"}, lambda: bench_cleanup(session, options)
        )
    report.ratios = headline_ratios(report)
    report.total_seconds = round(time.perf_counter() - started, 1)
    return report


def headline_ratios(report: BenchReport) -> dict[str, float | None]:
    def rate(results: list[ThroughputResult], name: str, clients: int) -> float | None:
        for result in results:
            if result.name == name and result.clients == clients and result.supported:
                return result.items_per_s
        return None

    concurrent = STOW_CONCURRENT_CLIENTS
    return {
        "stow_small_concurrent_vs_1": ratio(
            rate(report.stow, "stow small", concurrent), rate(report.stow, "stow small", 1)
        ),
        "frames_concurrent_vs_1": ratio(
            rate(report.frames, "frames", FRAME_CONCURRENT_CLIENTS),
            rate(report.frames, "frames", 1),
        ),
        "frames_identity_vs_default_1_client": ratio(
            rate(report.frames, "frames identity", 1), rate(report.frames, "frames", 1)
        ),
    }


# ---------------------------------------------------------------- output


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value: float | int | None, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}{suffix}" if isinstance(value, float) else f"{value:,}{suffix}"


def latency_row(result: LatencyResult) -> str:
    if not result.supported:
        return f"  {result.name:<24} {'n/a':>9} {'':>9} {'':>7}  {result.note}"
    size = f"{result.body_bytes / 1024:,.0f} KiB" if result.body_bytes else ""
    return (
        f"  {result.name:<24} {fmt(result.p50_ms):>9} {fmt(result.p95_ms):>9} "
        f"{fmt(result.rows):>7}  n={result.repeats} {size}"
    )


def throughput_row(result: ThroughputResult, unit: str) -> str:
    label = f"{result.name} x{result.clients}"
    if not result.supported:
        return f"  {label:<24} {'n/a':>10}  {result.note}"
    return (
        f"  {label:<24} {fmt(result.items_per_s):>10} {unit:<6} {fmt(result.mb_per_s):>8} MB/s"
        f"  median {fmt(result.median_items_per_s)}/s  p50 {fmt(result.p50_ms)} ms"
        f"  p95 {fmt(result.p95_ms)} ms  ok={result.requests_ok} err={result.errors}"
        + (f"  [{result.note}]" if result.note else "")
    )


def render_table(report: BenchReport) -> str:
    lines = [f"DICOMweb benchmark [{report.label}] {report.url}  ({report.started_at})"]
    if report.dataset:
        d = report.dataset
        lines.append(
            f"data: {d.small_studies} studies / {d.small_instances} small instances "
            f"+ MR {d.mr_slices} slices ({d.mr_bytes / MB:.1f} MB); uploaded now: "
            f"{d.uploaded_instances} instances ({d.uploaded_bytes / MB:.1f} MB)"
        )
    lines.append("STOW (batches of 32)            inst/s")
    lines += [throughput_row(r, "inst/s") for r in report.stow]
    lines.append(f"QIDO                       {'p50 ms':>9} {'p95 ms':>9} {'rows':>7}")
    lines += [latency_row(r) for r in report.qido]
    if report.metadata:
        lines.append("WADO metadata")
        lines.append(latency_row(report.metadata))
        if report.metadata_gzip:
            lines.append(latency_row(report.metadata_gzip)
                         + f"  on the wire {fmt(report.metadata_gzip.wire_bytes)} B")
    lines.append("WADO frames / rendered / retrieve")
    lines += [throughput_row(r, "fr/s") for r in report.frames]
    if report.rendered:
        lines.append(throughput_row(report.rendered, "img/s"))
    if report.rendered_repeated:
        lines.append(throughput_row(report.rendered_repeated, "img/s"))
    if report.rendered_native:
        lines.append(throughput_row(report.rendered_native, "img/s"))
    if report.series_retrieve:
        lines.append(throughput_row(report.series_retrieve, "inst/s"))
    if report.series_retrieve_native:
        lines.append(throughput_row(report.series_retrieve_native, "inst/s"))
    if report.scale:
        lines.append(
            f"scale: {report.scale.studies_before} -> {report.scale.studies_after} studies "
            f"{report.scale.note}"
        )
        after_by_name = {r.name: r for r in report.scale.after}
        for before in report.scale.before:
            after = after_by_name.get(before.name)
            lines.append(
                f"  {before.name:<24} p50 {fmt(before.p50_ms)} ms -> "
                f"{fmt(after.p50_ms if after else None)} ms  "
                f"x{fmt(report.scale.ratios.get(before.name))}  rows {fmt(before.rows)} -> "
                f"{fmt(after.rows if after else None)}"
            )
    lines.append("ratios: " + ", ".join(f"{k}={fmt(v)}" for k, v in report.ratios.items()))
    if report.cleanup:
        lines.append(f"cleanup: {report.cleanup}")
    lines.append(f"total {report.total_seconds:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------- cli


def parse_args(argv: list[str] | None) -> BenchOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="DICOMweb base URL")
    parser.add_argument("--studies", type=int, help="small studies (default 2000, quick 200)")
    parser.add_argument("--mr-slices", type=int,
                        help="MR slices of the RT study (default 392, quick 100)")
    parser.add_argument("--repeat", type=int, help="repeats per query (default 30, quick 8)")
    parser.add_argument("--frame-seconds", type=float, help="per frame run (default 10, quick 3)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write all figures here")
    parser.add_argument("--label", default="server", help="name of the server in the report")
    parser.add_argument("--quick", action="store_true", help="small run (used by the tests)")
    parser.add_argument("--scale", action="store_true", help="probe cost before/after growth")
    parser.add_argument("--scale-add", type=int, help="studies added by --scale (default =studies)")
    parser.add_argument("--reupload", action="store_true", help="upload even if data is present")
    parser.add_argument("--cleanup", action="store_true", help="DELETE bench studies at the end")
    parser.add_argument(
        "--accept-encoding",
        default="gzip, deflate",
        help="Accept-Encoding sent on every request (browser-like default; 'identity' = none)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    studies = args.studies if args.studies is not None else (200 if quick else 2000)
    return BenchOptions(
        url=args.url.rstrip("/"),
        studies=studies,
        mr_slices=args.mr_slices if args.mr_slices is not None else (100 if quick else 392),
        repeat=args.repeat or (8 if quick else 30),
        query_budget_s=3.0 if quick else 10.0,
        frame_seconds=args.frame_seconds or (3.0 if quick else 10.0),
        rendered_seconds=2.0 if quick else 5.0,
        retrieve_repeats=1 if quick else 3,
        scale=args.scale,
        scale_add=args.scale_add if args.scale_add is not None else studies,
        reupload=args.reupload,
        cleanup=args.cleanup,
        accept_encoding=args.accept_encoding,
        label=args.label,
        json_path=args.json_path,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    ACCEPT_ENCODING["value"] = options.accept_encoding
    try:
        requests.get(f"{options.url}/studies?limit=1", timeout=10)
    except requests.RequestException as exc:
        print(f"server not reachable at {options.url}: {exc}", file=sys.stderr)
        return 2
    report = run_bench(options)
    print(render_table(report))
    if options.json_path:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(asdict(report), indent=2))
        log(f"wrote {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
