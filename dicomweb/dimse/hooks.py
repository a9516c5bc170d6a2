"""Where the DIMSE service adjusts pynetdicom, all in one place (installed once, in the
dedicated DIMSE process).

- Received datasets are written to disk as they arrive (bounded memory), into the blob
  store's temp folder (storing is a rename), behind File Meta naming this implementation.
- Datasets sent by C-GET and C-MOVE are read from their blob and sent as stored, never
  decoded and re-encoded.
- C-GET and C-MOVE SCPs are ours (dimse/retrieve.py): pynetdicom's cannot answer A900 or
  0124 before sub-operations start, and re-encode every dataset they send.
- TCP_NODELAY on every DIMSE socket: with Nagle's algorithm each small C-STORE waits for the
  peer's delayed ACK (about 40 ms).
"""

from __future__ import annotations

import functools
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages, evt
from pynetdicom.dsutils import create_file_meta
from pynetdicom.service_class import QueryRetrieveServiceClass

from dicomweb.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)

#: Prefix of the temp files pynetdicom writes received datasets to (swept after a crash).
RECEIVE_PREFIX = "dimse-"


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN, for accepted and requested associations alike."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # e.g. the peer already closed the connection
            log.debug("TCP_NODELAY not set: %s", exc)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, set_nodelay)


def install(temp_dir: Path) -> None:
    """Configure pynetdicom for this process; `temp_dir` is on the blob filesystem."""
    from dicomweb.dimse import retrieve

    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    # pynetdicom decodes and logs every identifier and PDU at INFO otherwise.
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # Unknown abstract syntaxes are accepted as storage, so that a dataset of an unknown SOP
    # Class gets the C-STORE status 0122 (dimse/storage.py) rather than a bare rejection.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined]
        tempfile.NamedTemporaryFile, dir=temp_dir, prefix=RECEIVE_PREFIX
    )
    dimse_messages.create_file_meta = functools.partial(  # type: ignore[attr-defined]
        create_file_meta,
        implementation_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version=IMPLEMENTATION_VERSION_NAME,
    )
    QueryRetrieveServiceClass._get_scp = retrieve.serve_get  # type: ignore[method-assign]
    QueryRetrieveServiceClass._move_scp = retrieve.serve_move  # type: ignore[method-assign]
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def sweep_received(temp_dir: Path, older_than_s: float = 24 * 3600) -> int:
    """Remove datasets a broken association left half-received."""
    import time

    count = 0
    deadline = time.time() - older_than_s
    for path in temp_dir.glob(f"{RECEIVE_PREFIX}*.dcm"):
        try:
            if path.stat().st_mtime < deadline:
                path.unlink()
                count += 1
        except FileNotFoundError:
            continue
    return count


def context_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of `AE.associate` for an association this service requests."""
    return {"evt_handlers": [NODELAY_HANDLER], **kwargs}
