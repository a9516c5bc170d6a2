"""pynetdicom as dicomweb/dimse/hooks.py adjusts it, with the DIMSE service in this process on
a real store and pynetdicom as the peer: TCP_NODELAY on the sockets of accepted associations
and of those the service requests (C-MOVE, Storage Commitment reports), and a received
dataset that cannot be written kept as an error rather than an abort."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomweb.config import Settings
from dicomweb.dimse import hooks
from dicomweb.dimse.server import DimseService
from dicomweb.store.repository import Store


@pytest.fixture
def service(tmp_path: Path, backend: str | None) -> Iterator[DimseService]:
    settings = Settings(data_dir=tmp_path / "data", database_url=backend, host="127.0.0.1",
                        dimse_port=0)
    store = Store(settings)
    store.create_schema()
    running = DimseService(settings, store)
    running.start()
    yield running
    running.close()
    store.close()


def nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def associate(service: DimseService, **kwargs) -> object:
    ae = AE(ae_title="TEST")
    ae.add_requested_context(Verification)
    host, port = service.address
    assoc = ae.associate(host, port, ae_title="DICOMWEB", **kwargs)
    assert assoc.is_established
    return assoc


def test_accepted_and_requested_associations_have_tcp_nodelay(service: DimseService) -> None:
    plain = associate(service)
    ours = associate(service, **hooks.context_kwargs())
    try:
        assert not nodelay(plain.dul.socket.socket)  # the default, for contrast
        assert nodelay(ours.dul.socket.socket)  # as C-MOVE and commitment reports request
        accepted = service.ae.active_associations
        assert len(accepted) == 2
        assert all(nodelay(assoc.dul.socket.socket) for assoc in accepted)
        assert ours.send_c_echo().Status == 0x0000
    finally:
        plain.release()
        ours.release()


def test_a_received_file_that_cannot_be_written_keeps_the_error(tmp_path: Path) -> None:
    received = hooks.ReceivedFile(tmp_path)
    received.write(b"\0" * 128 + b"DICM")

    def full(data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    received._file.write = full  # the disk fills up under this file
    assert received.write(b"more") == 4  # pynetdicom's DUL thread goes on
    received.file.flush()
    received.close()
    assert received.error is not None and received.error.errno == errno.ENOSPC
    assert Path(received.name).stat().st_size == 0  # its room given back
    assert Path(received.name).name.startswith(hooks.RECEIVE_PREFIX)
