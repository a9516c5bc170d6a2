"""Parsing STOW parts in worker processes, so one server process uses every core.

Parsing a DICOM file and building its DICOM JSON is pure Python and holds the GIL: in one
process it took half of STOW's time and stopped the event loop from receiving the next parts
and answering reads. Here a pool of processes (one per core by default) parses the received
files while the event loop goes on; the parent process keeps the index transaction, the blob
moves and every read, so a single server process still owns all its caches.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from dicomweb.errors import PROCESSING_FAILURE, InstanceRejected
from dicomweb.ingest import IngestedInstance, parse_part

log = logging.getLogger(__name__)

Parsed = IngestedInstance | InstanceRejected
#: InstanceRejected as plain values: exceptions with keyword arguments do not pickle whole.
_Rejection = tuple[int, str, str | None, str | None]


def _parse_in_worker(
    paths: list[str], expected_study: str | None
) -> list[IngestedInstance | _Rejection]:
    out: list[IngestedInstance | _Rejection] = []
    for path in paths:
        parsed = parse_part(Path(path), expected_study)
        if isinstance(parsed, InstanceRejected):
            out.append(
                (parsed.reason, parsed.message, parsed.sop_class_uid, parsed.sop_instance_uid)
            )
        else:
            parsed.dataset = None  # re-read from the blob when needed; not worth pickling
            out.append(parsed)
    return out


def _warm_up() -> int:
    return os.getpid()


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

    def start(self) -> None:
        if self.processes <= 0 or self._executor is not None:
            return
        # spawn, not fork: the server process has threads (thread pool, uvloop) by now.
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(self.processes, mp_context=context)
        # Start the workers (and import pydicom there) now, in the background, rather than
        # during the first upload.
        for _ in range(self.processes):
            self._executor.submit(_warm_up)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def parse(self, paths: list[Path], expected_study: str | None) -> list[Parsed]:
        """The parts of one batch, split evenly over the workers; order is kept."""
        executor = self._executor
        loop = asyncio.get_running_loop()
        if executor is None:
            return await loop.run_in_executor(None, parse_here, paths, expected_study)
        size = -(-len(paths) // self.processes)
        chunks = [[str(p) for p in paths[i : i + size]] for i in range(0, len(paths), size)]
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(executor, _parse_in_worker, c, expected_study)
                  for c in chunks)
            )
        except BrokenProcessPool:
            return await self._parse_after_crash(paths, expected_study)
        return [_rejection(value) for chunk in results for value in chunk]

    async def _parse_after_crash(
        self, paths: list[Path], expected_study: str | None
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
                    self._executor, _parse_in_worker, [str(path)], expected_study
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
        self.start()


def parse_here(paths: list[Path], expected_study: str | None) -> list[Parsed]:
    return [parse_part(path, expected_study) for path in paths]
