"""One memory budget for the pixel work of a process (render, transcode, MPR, RT rasters).

Each piece of work reserves the bytes it will hold at most, estimated before it allocates,
and gives them back when it is done; concurrent requests are admitted while their sum fits,
so N parallel requests cannot add up past the budget. A request that does not fit waits up
to ``wait_s`` for others to finish, then :class:`BudgetBusy` (503 with Retry-After); one
that could never fit is :class:`BudgetExceeded` at once (422 or 406).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import PixelError

MIB = 1 << 20


class BudgetExceeded(PixelError):
    """The work needs more memory than the whole budget."""


class BudgetBusy(PixelError):
    """Other requests hold the budget and did not give enough back in time."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MemoryBudget:
    def __init__(self, capacity_bytes: int, wait_s: float) -> None:
        self.capacity = max(int(capacity_bytes), 1)
        self.wait_s = max(float(wait_s), 0.0)
        self._held = 0
        self._condition = threading.Condition()

    @property
    def held(self) -> int:
        with self._condition:
            return self._held

    def fits_now(self, nbytes: int) -> bool:
        with self._condition:
            return self._held + max(int(nbytes), 0) <= self.capacity

    @contextmanager
    def reserve(self, nbytes: int, what: str, wait: bool = True) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the duration of the block; with ``wait`` false
        (work on the event loop, which must never block) busy is at once, not after wait_s."""
        nbytes = max(int(nbytes), 0)
        if nbytes > self.capacity:
            raise BudgetExceeded(
                f"{what} needs about {nbytes // MIB} MiB of memory, more than the server's "
                f"pixel memory of {self.capacity // MIB} MiB (DICOMWEB_PIXEL_MEMORY_BYTES)")
        deadline = time.monotonic() + (self.wait_s if wait else 0.0)
        with self._condition:
            while self._held + nbytes > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BudgetBusy(
                        f"the server is busy with other images: {what} needs about "
                        f"{nbytes // MIB} MiB of pixel memory; try again shortly",
                        retry_after_s=max(1, round(self.wait_s)))
                self._condition.wait(left)
            self._held += nbytes
        try:
            yield
        finally:
            with self._condition:
                self._held -= nbytes
                self._condition.notify_all()
