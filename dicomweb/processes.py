"""Whether another process is still there: the metrics collector (a dead worker's gauge files)
and the ingest workers (their server) ask. Light on purpose: the workers import it."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while `pid` exists (signal 0 checks without sending; someone else's process is
    alive too, it only may not be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
