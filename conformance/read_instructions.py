"""Instructions per request of the hot read routes (callgrind), for the whole server process:
uvicorn's protocol, the middleware, the handler, the audit record and its writer thread.

    python -m conformance.read_instructions [--source DIR] [--requests 200] [--slices 392]

The data (an MR series of `--slices` 256×256 slices, a few 512×512 CT slices) is stored once
through a plain `dicomweb serve`; then `dicomweb serve` (its defaults: one worker, audit on,
authentication off on loopback) runs on that data folder under valgrind's callgrind,
instrumented only while one keep-alive client (outside valgrind) sends a workload's requests,
after a warm-up; each workload's counts are dumped on their own. User-space instructions
only: the kernel's part (sockets, file reads) is not in it. `--source` runs another checkout's
server code (e.g. `git archive COMMIT | tar -x -C DIR`) on the same data.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conformance import benchdata, generate
from conformance.bench import FRAME_ACCEPT, encode_multipart
from conformance.compare import free_port

REPOSITORY = Path(__file__).resolve().parent.parent
CT_SLICES = 4
WARM_UP = 20
JSON = "application/dicom+json"
#: name -> (path of request k, request headers)
Workload = tuple[Callable[[int], str], dict[str, str]]


def workloads(slices: int) -> dict[str, Workload]:
    series = f"/dicomweb/studies/{benchdata.mr_study_uid()}/series/{benchdata.mr_series_uid()}"
    rt = ct_study()
    ct = f"/dicomweb/studies/{rt.study.uid}/series/{rt.series_uid('ct')}"
    cts = [rt.instance_uid("ct", index) for index in range(CT_SLICES)]
    frames = min(slices, 8)
    return {
        "frame (OHIF accept)": (
            lambda k: f"{series}/instances/{benchdata.mr_series_uid()}.{k % frames + 1}/frames/1",
            {"Accept": FRAME_ACCEPT}),
        "series metadata": (lambda k: f"{series}/metadata", {"Accept": JSON}),
        "series metadata, gzip": (lambda k: f"{series}/metadata",
                                  {"Accept": JSON, "Accept-Encoding": "gzip"}),
        # A window not asked before: nothing comes from a cache of rendered images.
        "rendered JPEG, new image": (
            lambda k: f"{ct}/instances/{cts[k % CT_SLICES]}/rendered?window=40,{400 + k},linear",
            {"Accept": "image/jpeg"}),
    }


def ct_study() -> generate.RtStudy:
    patient = generate.Patient("Bench^Instructions", "BENCH-INSTR", "19700101", "O")
    return generate.RtStudy(seed=91_000, ct_slices=CT_SLICES, mr_slices=1, patient=patient)


def instances(slices: int) -> list[bytes]:
    mr = [benchdata.mr_slice(k, slices).data for k in range(slices)]
    ct = [benchdata._encode(ds) for ds in generate.ct_series_datasets(ct_study())]
    return mr + ct


@contextmanager
def serving(data: Path, source: Path, under_valgrind: list[str]) -> Iterator[tuple[int, int]]:
    """`dicomweb serve` on `data` (under `under_valgrind`'s command, if any): (port, pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    env["PYTHONPATH"] = str(source)
    command = [*under_valgrind, sys.executable, "-m", "dicomweb.cli", "serve", "--port",
               str(port), "--data", str(data)]
    log = data.parent / f"server-{port}.log"  # a file: a full pipe would stop the server
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        deadline = time.time() + 600
        while not ready(port):
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"the server did not start: {log.read_text()[-800:]}")
            time.sleep(0.5)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=600)


def ready(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def upload(port: int, bodies: list[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for start in range(0, len(bodies), 32):
        body, content_type = encode_multipart(bodies[start:start + 32], "application/dicom")
        connection.request("POST", "/dicomweb/studies", body=body,
                           headers={"Content-Type": content_type})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"STOW answered {answer.status}")


def send(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> None:
    connection.request("GET", path, headers=headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        raise RuntimeError(f"GET {path} answered {answer.status}")


def callgrind(pid: int, *arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments, str(pid)], check=True, capture_output=True)


def measure(source: Path, requests: int, slices: int, keep: Path | None = None
            ) -> dict[str, float]:
    """Millions of instructions per request, by workload; with `keep`, each workload's
    callgrind dump is left there (`callgrind_annotate` reads it)."""
    found: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="read-instructions-") as scratch:
        data = Path(scratch) / "data"
        with serving(data, source, []) as (port, _):
            upload(port, instances(slices))
        dumps = keep or Path(scratch)
        dumps.mkdir(parents=True, exist_ok=True)
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={dumps}/callgrind.out"]
        with serving(data, source, valgrind) as (port, pid):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            for number, (name, (path_of, headers)) in enumerate(workloads(slices).items()):
                for k in range(WARM_UP):
                    send(connection, path_of(100_000 + k), headers)
                callgrind(pid, "--instr=on")
                for k in range(requests):
                    send(connection, path_of(k), headers)
                callgrind(pid, "--instr=off")
                callgrind(pid, f"--dump={number}")
                found[name] = dumped_instructions(dumps, number, keep is None) / requests / 1e6
    return found


def dumped_instructions(folder: Path, number: int, remove: bool) -> int:
    """The instruction total of the dump made with hint `number` (callgrind's `totals:`)."""
    for path in sorted(folder.glob("callgrind.out.*")):
        text = path.read_text(errors="replace")
        if re.search(rf"^desc: Trigger: .*\b{number}$", text, re.M):
            total = re.search(r"^totals: (\d+)", text, re.M)
            if total:
                if remove:
                    path.unlink()
                return int(total[1])
    raise RuntimeError(f"no callgrind dump {number} in {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPOSITORY)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slices", type=int, default=392)
    parser.add_argument("--keep", type=Path, help="folder to keep the callgrind dumps in")
    args = parser.parse_args(argv)
    figures = measure(args.source.resolve(), args.requests, args.slices, args.keep)
    print(f"{args.source}: M instructions per request ({args.requests} requests each)")
    for name, millions in figures.items():
        print(f"  {name:28} {millions:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
