"""Group commit: one writer thread per process appends the records of concurrent requests in
one transaction, so a burst of N requests costs about one commit, not N.

Each request submits its event and waits on a future; the writer takes everything queued, writes
it, and resolves every future of the group with its sequence number (or the error).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("dicomweb.audit")

Item = TypeVar("Item")
#: Groups larger than this are split (bounded transaction size and memory).
MAX_GROUP = 512
ATTEMPTS = 3


class AuditUnavailable(RuntimeError):
    """The record could not be written: the request must not complete as if it were."""


class GroupWriter(Generic[Item]):
    def __init__(self, write: Callable[[Sequence[Item]], list[int]], name: str = "audit-writer"):
        self.write = write
        self.name = name
        self.queue: queue.SimpleQueue[tuple[Item, Future[int]] | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    def submit(self, item: Item) -> Future[int]:
        future: Future[int] = Future()
        self.queue.put((item, future))
        if self.thread is None or not self.thread.is_alive():
            self._start()
        return future

    def _start(self) -> None:
        with self.start_lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self.thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self.thread is not None and self.thread.is_alive():
            self.queue.put(None)
            self.thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    following = self.queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    stopping = True
                    break
                group.append(following)
            self._write_group(group)

    def _write_group(self, group: list[tuple[Item, Future[int]]]) -> None:
        items = [item for item, _ in group]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                numbers = self.write(items)
            except Exception as exc:  # a database failure is retried; anything else is a bug
                # The driver's message only: SQLAlchemy's would add the statement's parameters.
                reason = f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"
                log.warning("audit append of %d records failed (attempt %d of %d): %s",
                            len(items), attempt, ATTEMPTS, reason,
                            exc_info=not isinstance(exc, DBAPIError))
                if attempt == ATTEMPTS or not isinstance(exc, DBAPIError):
                    error = AuditUnavailable(f"the audit trail could not be written: {reason}")
                    for _, future in group:
                        future.set_exception(error)
                    return
                time.sleep(0.05 * attempt)
            else:
                for (_, future), number in zip(group, numbers, strict=True):
                    future.set_result(number)
                return
