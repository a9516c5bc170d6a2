"""Group commit: one writer thread per process appends the records of concurrent requests in
one transaction, so a burst of N requests costs about one commit, not N.

Each request submits its event with an asyncio future of its event loop and awaits it; the
writer takes everything queued, writes it, and settles the group's futures with their sequence
numbers (or the error) in one call per event loop, so a group wakes its loop once.

When nothing is queued, `write_now` (if given) appends the record at once in the caller's
thread, provided it can do so without waiting for any lock: a lone request then costs one
small transaction and no hand-off to the writer thread and back (two thread wake-ups, on a busy
machine each a wait for a core). Anything that would wait goes to the writer thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("dicomweb.audit")

Item = TypeVar("Item")
#: Groups larger than this are split (bounded transaction size and memory).
MAX_GROUP = 512
ATTEMPTS = 3
#: An event loop's future (settled in that loop), or a future a blocked thread waits on.
Waiter = (tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]
          | concurrent.futures.Future[int])


class AuditUnavailable(RuntimeError):
    """The record could not be written: the request must not complete as if it were."""


class GroupWriter(Generic[Item]):
    """`write(items)` for each group; `idle()` at most every `idle_seconds` between groups (for
    work that may lag, such as indexing what was written); `write_now(item)`, if given, for an
    item arriving while nothing is queued: its sequence number, or None if it would have to
    wait (the item is then queued)."""

    def __init__(self, write: Callable[[Sequence[Item]], list[int]],
                 idle: Callable[[], object] = lambda: None, idle_seconds: float = 1.0,
                 name: str = "audit-writer",
                 write_now: Callable[[Item], int | None] | None = None):
        self.write = write
        self.write_now = write_now
        #: Held while `write_now` runs: it uses one connection, whichever thread calls it.
        self.writing_now = threading.Lock()
        self.idle = idle
        self.idle_seconds = idle_seconds
        self.last_idle = time.monotonic()
        self.name = name
        self.queue: queue.SimpleQueue[tuple[Item, Waiter] | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    async def append(self, item: Item, now: bool = True) -> int:
        """Append `item`; returns its sequence number once it is committed. `now=False`: go
        to the writer thread even if nothing is queued (other requests of this event loop are
        under way, and their records may join the same commit)."""
        if self.thread is None or not self.thread.is_alive():
            self._start()  # also when writing now: the idle work runs there
        number = self._try_now(item) if now else None
        if number is not None:
            return number
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.queue.put((item, (loop, future)))
        return await future

    def append_blocking(self, item: Item, timeout: float | None = None) -> int:
        """`append` for threads without an event loop (DIMSE handlers): blocks until `item` is
        committed. Raises AuditUnavailable when it could not be written."""
        if self.thread is None or not self.thread.is_alive():
            self._start()
        number = self._try_now(item)
        if number is not None:
            return number
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self.queue.put((item, future))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise AuditUnavailable("the audit trail could not be written in time") from None

    def try_now(self, item: Item) -> int | None:
        """`item` appended at once in this thread if nothing is queued and `write_now` needs
        no wait: its sequence number; else None (nothing was written: `append` it)."""
        if self.thread is None:
            self._start()  # the idle work runs there
        return self._try_now(item)

    def _try_now(self, item: Item) -> int | None:
        if self.write_now is None or not self.queue.empty():
            return None  # join the group being gathered
        if not self.writing_now.acquire(blocking=False):
            return None
        try:
            return self.write_now(item)
        finally:
            self.writing_now.release()

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
            if time.monotonic() - self.last_idle >= self.idle_seconds:
                self._idle()
            try:
                first = self.queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                continue
            if first is None:
                break
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
        self._idle()  # closing: index what was written

    def _idle(self) -> None:
        self.last_idle = time.monotonic()
        try:
            self.idle()
        except Exception as exc:  # it runs again later; the records themselves are written
            log.warning("audit idle work failed: %s: %s", type(exc).__name__,
                        getattr(exc, "orig", None) or exc)

    def _write_group(self, group: list[tuple[Item, Waiter]]) -> None:
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
                    settle(group, [error] * len(group))
                    return
                time.sleep(0.05 * attempt)
            else:
                settle(group, numbers)
                return


def settle(group: list[tuple[Item, Waiter]], outcomes: Sequence[int | Exception]) -> None:
    """Each waiter's outcome, handed to its event loop: one wake-up per loop per group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], object]]] = {}
    for (_, waiter), outcome in zip(group, outcomes, strict=True):
        if isinstance(waiter, concurrent.futures.Future):
            _settle_blocked(waiter, outcome)
            continue
        loop, future = waiter
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, pairs)


def _settle_blocked(future: concurrent.futures.Future[int], outcome: int | Exception) -> None:
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _resolve(pairs: list[tuple[asyncio.Future[int], object]]) -> None:
    for future, outcome in pairs:
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]
