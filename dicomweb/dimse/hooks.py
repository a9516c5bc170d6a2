"""Where the DIMSE service adjusts pynetdicom, all in one place (installed once, in the
dedicated DIMSE process).

- Received datasets are written to disk as they arrive (bounded memory), into the blob
  store's temp folder (storing is a rename), behind File Meta naming this implementation;
  a write that fails (disk full) is answered A700 instead of aborting the association.
- Datasets sent by C-GET and C-MOVE are read from their blob and sent as stored, never
  decoded and re-encoded.
- C-GET and C-MOVE SCPs are ours (dimse/retrieve.py): pynetdicom's cannot answer A900 or
  0124 before sub-operations start, and re-encode every dataset they send.
- Command sets and received File Meta are encoded directly, and the C-STORE-RQ received and
  the C-STORE-RSP answered never become pydicom Datasets (dimse/encoding.py).
- TCP_NODELAY on every DIMSE socket: with Nagle's algorithm each small C-STORE waits for the
  peer's delayed ACK (about 40 ms).
- pynetdicom's two loops per association (the DUL reading the socket, the association
  serving messages) poll with 1 ms sleeps; each message waits for one of them to wake, and on a
  busy machine a 1 ms sleep lasts several: a C-ECHO round trip took 4.9 ms (dcmtk's storescp
  0.18 ms). Their sleeps here end as soon as there is work: data on the socket or a primitive
  queued for the DUL, a message or an ACSE primitive queued for the association.
- A C-STORE response is written to the socket by the association's thread itself (the same
  P-DATA-TF PDU, under a lock shared with the DUL's sends), not queued for the DUL thread to
  wake up and send.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pynetdicom import _config, association, dimse, dimse_messages, dsutils, dul, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import QueryRetrieveServiceClass

from dicomweb.dimse import encoding
from dicomweb.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)

#: Prefix of the temp files pynetdicom writes received datasets to (swept after a crash).
RECEIVE_PREFIX = "dimse-"


class ReceivedFile:
    """The temp file pynetdicom writes a received dataset into (its NamedTemporaryFile: the
    same `name`, `write`, `file.flush`, `close`). pynetdicom writes in its DUL thread, where
    an OSError aborts the association; here the first failure is kept in `error`, the file
    is emptied (giving back its room) and later writes are dropped, so that the C-STORE
    handler answers it (dimse/storage.py: A700 for a full disk)."""

    def __init__(self, temp_dir: Path) -> None:
        # A unique name and O_EXCL, as NamedTemporaryFile makes it, less its cost (its name
        # generator and wrapper took as much CPU as creating the file).
        path = temp_dir / f"{RECEIVE_PREFIX}{uuid.uuid4().hex}.dcm"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = open(descriptor, "wb")  # noqa: SIM115 (pynetdicom closes it)
        self.name = str(path)
        self.file = self
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, error: OSError) -> None:
        self.error = error
        log.warning("receiving %s failed: %s", self.name, error)
        with contextlib.suppress(OSError):
            self._file.truncate(0)
            self._file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # unflushed bytes of a failed file
            self._file.close()


def receive_error(request: Any) -> OSError | None:
    """Why the dataset of a C-STORE request could not be written, if it could not."""
    received = getattr(request, "_dataset_file", None)
    return getattr(received, "error", None)


def on_connection(event: evt.Event) -> None:
    """EVT_CONN_OPEN, for accepted and requested associations alike: TCP_NODELAY, and loops
    that wake when there is work."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # e.g. the peer already closed the connection
            log.debug("TCP_NODELAY not set: %s", exc)
    wake_on_work(event.assoc)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, on_connection)


class Wakeup:
    """A self-pipe a loop can wait on beside its socket."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(self.write_end, False)

    def notify(self) -> None:
        with contextlib.suppress(OSError):  # already pending (the pipe is full), or closed
            os.write(self.write_end, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.read_end, 4096)

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def notifying(put: Any, notify: Any) -> Any:
    def put_and_notify(item: Any, *args: Any, **kwargs: Any) -> None:
        put(item, *args, **kwargs)
        notify()

    return put_and_notify


def wake_on_work(assoc: Any) -> None:
    """Give the association's DUL and reactor threads a wait that ends on work (used by
    `ResponsiveTime.sleep` when they sleep); instance attributes only, safe at any time."""
    provider = assoc.dul
    wakeup = Wakeup()
    provider.to_provider_queue.put = notifying(provider.to_provider_queue.put, wakeup.notify)
    provider._dicomweb_wait = functools.partial(wait_for_dul_work, provider, wakeup)
    provider._dicomweb_wakeup = wakeup
    served = threading.Event()
    assoc.dimse.msg_queue.put = notifying(assoc.dimse.msg_queue.put, served.set)
    provider.to_user_queue.put = notifying(provider.to_user_queue.put, served.set)
    assoc._dicomweb_wait = functools.partial(wait_for_event, served)
    assoc.bind(evt.EVT_CONN_CLOSE, lambda event: wakeup.close())
    leave_responses_to_their_caller(assoc)
    serialise_sends(provider)


def serialise_sends(provider: Any) -> None:
    """One PDU on the socket at a time: the DUL thread's sends and the C-STORE responses
    `send_directly` writes from the association's thread never interleave."""
    lock = threading.Lock()
    send = provider._send

    def locked_send(pdu: Any) -> None:
        with lock:
            send(pdu)

    provider._send = locked_send
    provider._dicomweb_send_lock = lock


def leave_responses_to_their_caller(assoc: Any) -> None:
    """pynetdicom's reactor can take the response a send_c_store() (C-MOVE sub-operations,
    C-GET, commitment reports) waits for: its pause flag is still set from the previous
    operation when the next one starts, so the reactor resumes, takes the response off the
    queue and drops it as unexpected, and the operation waits for its DIMSE timeout. While an
    operation is under way (the reactor's checkpoint cleared), the reactor leaves responses."""
    provider = assoc.dimse
    take = provider.get_msg

    def get_msg(block: bool = False) -> Any:
        if not block and threading.current_thread() is assoc:
            _, message = provider.peek_msg()
            if (message is not None and not assoc._reactor_checkpoint.is_set()
                    and getattr(message, "is_valid_response", False)):
                return None, None
        return take(block)

    provider.get_msg = get_msg


def wait_for_dul_work(provider: Any, wakeup: Wakeup, seconds: float) -> None:
    sock = provider.socket.socket if provider.socket else None
    try:
        select.select([wakeup.read_end] + ([sock] if sock is not None else []), [], [],
                      seconds)
    except (OSError, ValueError):  # socket or pipe closed under us
        time.sleep(seconds)
    wakeup.drain()


def wait_for_event(event: threading.Event, seconds: float) -> None:
    event.wait(seconds)
    event.clear()  # what set it is checked right after the wait, by the loop itself


#: The sleep of pynetdicom's two loops between checks (`_run_loop_delay`, and the
#: association's literal 1 ms).
LOOP_DELAY_S = 0.001
#: How long those loops wait here instead: what they wait for wakes them at once, so this
#: bounds only what nothing signals (timers, a kill flag). At 1 ms an association woke its two
#: threads about 14 times per C-STORE, and 2,000 times a second when idle.
IDLE_WAIT_S = 0.01


class ResponsiveTime:
    """`time` as pynetdicom's dul and association modules see it: a sleep in a thread that
    has a work-aware wait uses it; everything else is the real module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait = getattr(threading.current_thread(), "_dicomweb_wait", None)
        if wait is None:
            time.sleep(seconds)
        else:
            wait(IDLE_WAIT_S if seconds == LOOP_DELAY_S else seconds)


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
    dimse_messages.NamedTemporaryFile = (  # type: ignore[attr-defined]
        lambda **_: ReceivedFile(temp_dir))
    dimse_messages.create_file_meta = functools.partial(  # type: ignore[attr-defined]
        encoding.file_meta,
        implementation_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version=IMPLEMENTATION_VERSION_NAME,
    )
    dimse_messages.write_file_meta_info = encoding.write_file_meta  # type: ignore[attr-defined]
    dimse_messages.encode = encoding.command_set_encoder(dsutils.encode)  # type: ignore
    dimse_messages.decode = encoding.command_set_decoder(dsutils.decode)  # type: ignore
    dimse.DIMSEMessage = encoding.ReceivedMessage  # type: ignore[misc]
    request = dimse_messages.C_STORE_RQ
    if not hasattr(request, "_dicomweb_original"):
        request._dicomweb_original = request.message_to_primitive  # type: ignore[attr-defined]
        request.message_to_primitive = store_request_to_primitive  # type: ignore[method-assign]
        provider = dimse.DIMSEServiceProvider
        provider._dicomweb_original = provider.send_msg  # type: ignore[attr-defined]
        provider.send_msg = send_msg  # type: ignore[method-assign]
    dul.time = ResponsiveTime()  # type: ignore[attr-defined]
    association.time = ResponsiveTime()  # type: ignore[attr-defined]
    QueryRetrieveServiceClass._get_scp = retrieve.serve_get  # type: ignore[method-assign]
    QueryRetrieveServiceClass._move_scp = retrieve.serve_move  # type: ignore[method-assign]
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def store_request_to_primitive(message: Any) -> Any:
    """C_STORE_RQ.message_to_primitive: a `StoreCommand` read directly, else pynetdicom's."""
    if isinstance(message.command_set, encoding.StoreCommand):
        return encoding.store_request_primitive(message, C_STORE())
    return dimse_messages.C_STORE_RQ._dicomweb_original(message)  # type: ignore[attr-defined]


def send_msg(provider: Any, primitive: Any, context_id: int) -> None:
    """DIMSEServiceProvider.send_msg: a C-STORE-RSP encoded directly into one P-DATA (when
    nothing listens for EVT_DIMSE_SENT, which needs pynetdicom's message object)."""
    if (isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None
            and not provider.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
        command = encoding.store_response_command(primitive)
        largest = provider.maximum_pdu_size
        if command is not None and (largest == 0 or len(command) + 6 <= largest):
            if send_directly(provider.dul, context_id, b"\x03" + command):
                return
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
            provider.dul.send_pdu(pdata)
            return
    dimse.DIMSEServiceProvider._dicomweb_original(  # type: ignore[attr-defined]
        provider, primitive, context_id)


#: Established (PS3.8 9.2): a P-DATA request is sent and the state stays the same (DT-1).
ESTABLISHED = "Sta6"


def send_directly(dul: Any, context_id: int, value: bytes) -> bool:
    """Send one presentation data value (control header and command) as a P-DATA-TF PDU
    (PS3.8 9.3.5) from this thread, instead of queueing it for the DUL thread: what DT-1
    would send, less a wake-up of that thread and its state machine per C-STORE. Only on an
    established association with nothing queued and nobody listening for sent PDUs; False
    otherwise (the caller queues it as usual)."""
    lock = getattr(dul, "_dicomweb_send_lock", None)
    sock = dul.socket
    if (lock is None or sock is None or dul.assoc.get_handlers(evt.EVT_PDU_SENT)
            or dul.assoc.get_handlers(evt.EVT_DATA_SENT)):
        return False
    item = struct.pack(">IB", len(value) + 1, context_id) + value
    pdu = struct.pack(">BBI", 0x04, 0x00, len(item)) + item
    with lock:
        if dul.state_machine.current_state != ESTABLISHED or not dul.to_provider_queue.empty():
            return False
        sock.send(pdu)  # a failure is the DUL's Evt17 (transport closed), as for its sends
    return True


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
