"""What storing one instance came to: stored (with warnings), or rejected with the PS3.18
reason an unexpected failure means (disk full, a write error, anything else)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomweb.errors import OUT_OF_RESOURCES, PROCESSING_FAILURE, InstanceRejected

log = logging.getLogger("dicomweb.store.repository")  # the name these records always had


@dataclass
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    outcome: str  # "stored" | "duplicate" | "replaced"
    warnings: list[str] = field(default_factory=list)



def guarded(store_one: Callable[[], StoredInstance]) -> StoredInstance | InstanceRejected:
    """One instance's outcome: stored, or rejected with the PS3.18 reason its failure means."""
    try:
        return store_one()
    except InstanceRejected as rejected:
        return rejected
    except Exception as exc:
        return rejection_for(exc)


#: errno values and SQLSTATE class / SQLite text that mean the disk or a quota is full.
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    original = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if getattr(original, "sqlstate", None) in ("53100", "53200"):  # disk full, out of memory
        return True
    return "database or disk is full" in str(original or "")


def rejection_for(exc: BaseException) -> InstanceRejected:
    """An unexpected failure while storing one instance, in words; the details to the log."""
    if is_out_of_space(exc):
        log.error("storing an instance failed: out of space (%s)", exc)
        return InstanceRejected(OUT_OF_RESOURCES, "the server is out of disk space")
    if isinstance(exc, (OSError, MemoryError)):
        log.exception("storing an instance failed while writing")
        return InstanceRejected(OUT_OF_RESOURCES, "the server could not write the instance")
    log.exception("storing an instance failed")
    return InstanceRejected(PROCESSING_FAILURE, "the server could not store the instance "
                            "(the reason is in its log)")
