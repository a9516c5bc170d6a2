"""Instructions per C-STORE of the DIMSE service (callgrind), a figure a loaded machine does not
change: CPU times on the shared 2-core machine spread by ±10 % between runs, this by ~1 %.

    python -m conformance.dimse_instructions [--source DIR] [--instances 200] [--associations 1]

The service (SQLite, audit on, as `dicomweb serve --dimse-port` runs it) runs in one process
under valgrind's callgrind, instrumented only while dcmtk's storescu sends the benchmark's small
instances (conformance.dimse_bench), after a warm-up. Counts user-space instructions only: the
kernel's part (file creation, fdatasync, sockets; about a quarter of the CPU time) is not in it.
`--source` runs another checkout's code (e.g. `git archive COMMIT | tar -x -C DIR`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
WARM_UP = 20


def serve_and_send(instances: int, associations: int) -> None:
    """The child, under valgrind: the service in this process, instrumented while sending."""
    from conformance.dimse_bench import RUN_INDEX_STEP, Peer, free_port, store, write_instances
    from dicomweb.audit import AuditTrail
    from dicomweb.audit.dimse import DimseAudit
    from dicomweb.config import Settings
    from dicomweb.dimse.server import DimseService
    from dicomweb.store.repository import Store

    folder = Path(tempfile.mkdtemp(prefix="dimse-instructions-"))
    port = free_port()
    settings = Settings(data_dir=folder / "data", host="127.0.0.1", dimse_port=port)
    data = Store(settings)
    trail = AuditTrail(data)
    data.create_schema()
    service = DimseService(settings, data, DimseAudit(trail))
    service.start()
    peer = Peer("ours", "DICOMWEB", port, os.getpid())
    store(peer, write_instances(folder / "warm-up", 5 * RUN_INDEX_STEP, WARM_UP), 1)
    paths = write_instances(folder / "run", 6 * RUN_INDEX_STEP, instances)
    toggle = ["callgrind_control", "--instr"]
    subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
    store(peer, paths, associations)
    subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)
    service.stop_listening()
    service.close()
    data.close()


def measure(source: Path, instances: int, associations: int) -> float:
    """Millions of instructions per instance."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONMALLOC": "malloc"}
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={scratch}/callgrind.out.%p", sys.executable,
             # This file, run as a script: `source` (an older checkout) may not have it.
             str(Path(__file__).resolve()), "--child", "--instances", str(instances),
             "--associations", str(associations)],
            env=env, cwd=source, capture_output=True, text=True, timeout=3600,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed: {result.stderr[-800:]}")
    return int(found[1]) / instances / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPOSITORY)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        serve_and_send(args.instances, args.associations)
        return 0
    millions = measure(args.source.resolve(), args.instances, args.associations)
    print(f"{args.source}: {millions:.2f} M instructions per C-STORE "
          f"({args.instances} instances, {args.associations} association(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
