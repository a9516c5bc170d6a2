"""The memory of a server process, from /proc: what its peak grew by during a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MIB = 1 << 20


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise KeyError(field)


@dataclass
class Growth:
    bytes: int = 0

    @property
    def mib(self) -> float:
        return self.bytes / MIB


@contextmanager
def peak_growth(pid: int) -> Iterator[Growth]:
    """How far the process's peak resident memory (VmHWM) rose above its resident memory at
    the start: the peak is reset first (/proc/PID/clear_refs, "5")."""
    with open(f"/proc/{pid}/clear_refs", "w") as fp:
        fp.write("5")
    start = status_kib(pid, "VmRSS")
    growth = Growth()
    yield growth
    growth.bytes = max(0, status_kib(pid, "VmHWM") - start) * 1024
