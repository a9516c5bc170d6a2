"""Parsing STOW parts in worker processes, so one server process uses every core.

Parsing a DICOM file and building its DICOM JSON is pure Python and holds the GIL: in one
process it took half of STOW's time and stopped the event loop from receiving the next parts
and answering reads. Here a pool of processes (one per core by default) parses the received
files while the event loop goes on; the parent process keeps the index transaction, the blob
moves and every read, so a single server process still owns all its caches.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from dicomweb.errors import PROCESSING_FAILURE, InstanceRejected
from dicomweb.ingest import IngestedInstance, parse_part
from dicomweb.part10 import InflateLimits
from dicomweb.processes import process_alive
from dicomweb.store.outcomes import rejection_for

log = logging.getLogger(__name__)

Parsed = IngestedInstance | InstanceRejected
#: InstanceRejected as plain values: exceptions with keyword arguments do not pickle whole.
_Rejection = tuple[int, str, str | None, str | None]


def _parse_in_worker(
    paths: list[str], expected_study: str | None, limits: InflateLimits
) -> list[IngestedInstance | _Rejection]:
    out: list[IngestedInstance | _Rejection] = []
    for path in paths:
        try:
            parsed = parse_part(Path(path), expected_study, limits)
        except Exception as exc:  # that part's failure, not the batch's
            parsed = rejection_for(exc)
        if isinstance(parsed, InstanceRejected):
            out.append(
                (parsed.reason, parsed.message, parsed.sop_class_uid, parsed.sop_instance_uid)
            )
        else:
            parsed.dataset = None  # re-read from the blob when needed; not worth pickling
            out.append(parsed)
    return out


#: What a worker runs: the parse, and what an RT object's index rows need (imported lazily by
#: the parse and the indexers), loaded before the first upload so that it never waits for them.
#: numpy.ma: numpy imports it at the first `np.median` (a structure set's slice spacing), 12 ms
#: that fell on the first structure set each worker indexed; ingest_preload, last, configures
#: SQLAlchemy's mappers.
WORKER_MODULES = ("dicomweb.ingest_pool", "dicomweb.rt.indexing", "dicomweb.rt.serialize",
                  "dicomweb.rt.slabs", "numpy.ma", "dicomweb.ingest_preload")


def _warm_up() -> int:
    for name in WORKER_MODULES:  # loaded already, unless the fork server's preload failed
        importlib.import_module(name)
    return os.getpid()


def _exit_with_server(server: int) -> None:
    """Worker start-up: leave when the server process is gone (even killed with SIGKILL, when
    nothing tells the pool) instead of lingering as an orphan. Its parent is the fork server,
    which stays while any worker holds its pipe, so the server itself is watched.

    Everything imported by then is moved out of the garbage collector's reach (`gc.freeze`):
    a full collection walked all of it (~40 ms, paid by whichever upload's parse met it, as
    an RT study's last batch did: 191 -> 327 ms) and wrote to pages shared with the fork
    server, copying them."""
    gc.freeze()

    def watch() -> None:
        try:
            exited = os.pidfd_open(server)  # readable once the process has exited (Linux)
        except (AttributeError, OSError):
            while process_alive(server):
                time.sleep(0.5)
        else:
            select.select([exited], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def _rejection(value: IngestedInstance | _Rejection) -> Parsed:
    if isinstance(value, tuple):
        reason, message, sop_class, sop_instance = value
        return InstanceRejected(
            reason, message, sop_class_uid=sop_class, sop_instance_uid=sop_instance
        )
    return value


def pool_size(configured: int, workers: int = 1) -> int:
    """0 means the cores this process may run on, shared between the server's workers."""
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


class IngestPool:
    """`parse(paths)` in worker processes (in a thread of this process when `processes` is 0)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: Executor | None = None
        self._warming: list[Future[int]] = []
        self._starting = False
        self._closed = False

    def start(self) -> None:
        """Start the workers in the background: until they are ready, parts are parsed in a
        thread here, so the first upload never waits for them (nor does the event loop for
        the fork server, which connects only once its imports are done, ~0.7 s)."""
        if self.processes <= 0 or self._executor is not None or self._starting:
            return
        self._starting = True
        threading.Thread(target=self._start_now, name="ingest-pool-start", daemon=True).start()

    def _start_now(self) -> None:
        # Not fork: the server process has threads (thread pool, uvloop) by now. A fork server
        # (single-threaded) imports the parser and the RT indexers once and forks each worker
        # from itself; spawn imported them again in every worker (0.7 s of CPU each), and a
        # pool restarted after a crash is ready at once.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(WORKER_MODULES))
        executor = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_exit_with_server,
            initargs=(os.getpid(),),
        )
        self._warming = [executor.submit(_warm_up) for _ in range(self.processes)]
        self._executor = executor  # after the warm-ups: `ready` waits for them
        self._starting = False
        if self._closed:
            self.close()

    @property
    def ready(self) -> bool:
        """True once every worker process has started."""
        return self._executor is not None and all(f.done() for f in self._warming)

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            # Not waiting: a part still being parsed must not hold the shutdown; the workers
            # leave on their own once this process is gone.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def parse(
        self, paths: list[Path], expected_study: str | None,
        limits: InflateLimits = InflateLimits(),
    ) -> list[Parsed]:
        """The parts of one batch, dealt out over the workers in turn; order is kept. Dealt,
        not cut in runs: a planning system sends its RT objects (each 5-50 ms to parse, against
        ~1 ms for an image) together at the end, and one worker got them all."""
        if self._executor is None and not self._closed:
            self.start()  # on the first upload: a server that only answers reads spawns nothing
        executor = self._executor
        loop = asyncio.get_running_loop()
        if executor is None or not self.ready:
            return await loop.run_in_executor(None, parse_here, paths, expected_study, limits)
        hands = min(self.processes, len(paths))
        chunks = [[str(p) for p in paths[i::hands]] for i in range(hands)]
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(executor, _parse_in_worker, c, expected_study, limits)
                  for c in chunks)
            )
        except BrokenProcessPool:
            return await self._parse_after_crash(paths, expected_study, limits)
        parsed: list[Parsed] = [None] * len(paths)  # type: ignore[list-item]
        for first, chunk in enumerate(results):
            parsed[first::hands] = [_rejection(value) for value in chunk]
        return parsed

    async def _parse_after_crash(
        self, paths: list[Path], expected_study: str | None, limits: InflateLimits
    ) -> list[Parsed]:
        """A worker died (killed, out of memory) on one of these parts: start a new pool and
        parse them one at a time, so only a part that kills its worker again is rejected."""
        log.error("an ingest worker process died; restarting the pool")
        loop = asyncio.get_running_loop()
        out: list[Parsed] = []
        for path in paths:
            self._restart()
            try:
                (value,) = await loop.run_in_executor(
                    self._executor, _parse_in_worker, [str(path)], expected_study, limits
                )
                out.append(_rejection(value))
            except BrokenProcessPool:
                out.append(InstanceRejected(
                    PROCESSING_FAILURE, "the instance could not be parsed (the parser process "
                    "was stopped, e.g. out of memory)"))
        return out

    def _restart(self) -> None:
        if self._executor is not None and not getattr(self._executor, "_broken", False):
            return
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self._start_now()  # the fork server runs already: forking the workers is quick


def parse_here(
    paths: list[Path], expected_study: str | None, limits: InflateLimits
) -> list[Parsed]:
    out: list[Parsed] = []
    for path in paths:
        try:
            out.append(parse_part(path, expected_study, limits))
        except Exception as exc:  # that part's failure, not the batch's
            out.append(rejection_for(exc))
    return out
