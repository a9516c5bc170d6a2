"""Instructions per QIDO request (callgrind), a figure a loaded machine does not change.

    python -m conformance.qido_instructions [--data DIR] [--requests 20] [--query NAME]

The app is built as `dicomweb serve` builds it (settings from the environment, audit on) on a
data folder holding `conformance.benchdata`'s 2,000 small studies and 392-slice MR series
(filled once, through the store's own ingest, into `--data`; later runs reuse it). It runs in
one process under valgrind's callgrind; requests go straight through the ASGI app (no socket,
no HTTP parser), instrumented only while the counted requests run, after a warm-up.
`--query` names one of `conformance.bench.qido_paths` ("PatientName=S*" by default);
`--database-url` measures on PostgreSQL instead of the folder's SQLite index; `--source` runs
another checkout's code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
STUDIES = 2000
MR_SLICES = 392
WARM_UP = 5
FILLED = "qido-instructions-filled"


def fill(data_dir: Path, database_url: str | None) -> None:
    """The bench's small studies and its 392-slice MR series, ingested through the store
    (once per folder and index)."""
    from conformance import benchdata
    from dicomweb.config import Settings
    from dicomweb.store.repository import Store

    suffix = "-pg" if database_url else ""
    small, mr = data_dir / (FILLED + suffix), data_dir / (FILLED + "-mr" + suffix)
    if small.exists() and mr.exists():
        return
    settings = Settings.from_env(data_dir=data_dir, **database_option(database_url))
    store = Store(settings)
    store.create_schema()
    if not small.exists():
        for index in range(STUDIES):
            store_all(store, benchdata.small_study(index))
        small.write_text("done\n")
    if not mr.exists():
        for first in range(0, MR_SLICES, 32):
            store_all(store, [benchdata.mr_slice(i, MR_SLICES)
                              for i in range(first, min(first + 32, MR_SLICES))])
        mr.write_text("done\n")
    store.close()


def store_all(store: Any, instances: list[Any]) -> None:
    paths = []
    for instance in instances:
        path = store.blobs.new_temp_path()
        path.write_bytes(instance.data)
        paths.append(path)
    store.store_files(paths)


def database_option(database_url: str | None) -> dict[str, Any]:
    return {"database_url": database_url} if database_url else {}


async def get(app: Any, path: str, query: str) -> tuple[int, int]:
    """One GET through the ASGI app: (status, body bytes)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "server": ("127.0.0.1", 8042),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8042"), (b"accept", b"application/dicom+json"),
                    (b"accept-encoding", b"gzip, deflate")],  # what conformance.bench sends
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, sum(len(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")


async def serve_and_ask(data_dir: Path, database_url: str | None, query_name: str,
                        requests: int) -> None:
    """The child, under valgrind: the app in this process, instrumented while asking."""
    from conformance import bench, benchdata
    from dicomweb.app import create_app
    from dicomweb.config import Settings

    settings = Settings.from_env(data_dir=data_dir, **database_option(database_url))
    app = create_app(settings)
    targets = bench.Targets(benchdata.study_uid(0), f"{benchdata.study_uid(0)}.1",
                            benchdata.patient_id(0), benchdata.mr_study_uid(),
                            benchdata.mr_series_uid(), [])
    target = dict(bench.qido_paths(targets))[query_name]
    resource, _, query = target.partition("?")
    path = f"{settings.root_path}/{resource}"
    async with app.router.lifespan_context(app):
        for _ in range(WARM_UP):
            status, size = await get(app, path, query)
        if status != 200:
            raise RuntimeError(f"{query_name}: status {status}")
        toggle = ["callgrind_control", "--instr"]
        subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
        for _ in range(requests):
            await get(app, path, query)
        subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)
    print(f"answer: {size} bytes", file=sys.stderr)


def measure(source: Path, data_dir: Path, database_url: str | None, query_name: str,
            requests: int) -> tuple[float, str]:
    """Millions of instructions per request, and the child's last stderr lines."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONMALLOC": "malloc"}
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={scratch}/callgrind.out.%p", sys.executable,
                   str(Path(__file__).resolve()), "--child", "--data", str(data_dir),
                   "--query", query_name, "--requests", str(requests)]
        if database_url:
            command += ["--database-url", database_url]
        result = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True,
                                timeout=3600)
        if keep := os.environ.get("QIDO_CALLGRIND_OUT"):  # for callgrind_annotate
            for out in Path(scratch).glob("callgrind.out.*"):
                out.replace(keep)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed: {result.stderr[-1500:]}")
    answer = re.search(r"answer: \d+ bytes", result.stderr)
    return int(found[1]) / requests / 1e6, answer[0] if answer else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPOSITORY)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "qido-bench")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--query", default="PatientName=S*")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(serve_and_ask(args.data, args.database_url, args.query, args.requests))
        return 0
    fill(args.data, args.database_url)
    millions, answer = measure(args.source.resolve(), args.data, args.database_url, args.query,
                               args.requests)
    print(f"{args.query}: {millions:.2f} M instructions per request ({answer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
