"""A server killed (SIGKILL) in the middle of STOW leaves each instance whole or absent: every
indexed instance has its complete blob, and after recovery every blob is indexed."""

from __future__ import annotations

import time
from datetime import timedelta

import requests
from conftest import start_server, stop_server
from factory import image, new_uid, to_bytes

from dicomweb.config import Settings
from dicomweb.store.repository import INSTANCES, PENDING, Store


def slow_body(parts: list[bytes], boundary: str, pause_s: float):
    for part in parts:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield part
        yield b"\r\n"
        time.sleep(pause_s)
    yield f"--{boundary}--\r\n".encode()


def upload_and_kill(server, parts: list[bytes], kill_after_s: float) -> None:
    import threading

    boundary = "crash" + new_uid().replace(".", "")
    killer = threading.Timer(kill_after_s, server.process.kill)
    killer.start()
    try:
        requests.post(
            f"{server.url}/studies",
            data=slow_body(parts, boundary, 0.015),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
            timeout=60,
        )
    except requests.RequestException:
        pass  # the server died mid-request, as intended
    finally:
        killer.join()
        server.process.wait(timeout=30)


def test_kill_during_stow_leaves_index_and_blobs_consistent(tmp_path, backend):
    data_dir = tmp_path / "data"
    study, series = new_uid(), new_uid()
    datasets = [
        image(study=study, series=series, instance_number=i, rows=128, columns=128)
        for i in range(100)
    ]
    expected = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
    parts = list(expected.values())
    counts = []
    # STOW stores parts in batches of 32: kills land before, during and after batch commits.
    for kill_after_s in (0.55, 0.9, 1.3):
        server = start_server(data_dir, backend)
        upload_and_kill(server, parts, kill_after_s)

        store = Store(Settings(data_dir=data_dir, database_url=backend))
        try:
            with store.engine.connect() as connection:
                # The PostgreSQL database is shared by the session's tests: only this study.
                rows = connection.execute(
                    INSTANCES.select()
                    .with_only_columns(INSTANCES.c.sop_instance_uid, INSTANCES.c.blob_key)
                    .where(INSTANCES.c.study_instance_uid == study)
                ).all()
            indexed = {sop: key for sop, key in rows}
            counts.append(len(indexed))
            for sop, key in indexed.items():
                assert store.blobs.path(key).read_bytes() == expected[sop]
            store.recover(grace=timedelta(0))
            with store.engine.connect() as connection:
                pending = [key for (key,) in connection.execute(PENDING.select())]
            assert not [key for key in pending if key.startswith(study)]
            on_disk = {
                p.relative_to(store.blobs.root).as_posix() for p in store.blobs.root.rglob("*.dcm")
            }
            assert on_disk == set(indexed.values())
        finally:
            store.close()

    # The kills landed mid-upload: some instances were stored, not all.
    assert 0 < max(counts) < len(parts), counts

    server = start_server(data_dir, backend)
    try:
        stored = requests.post(
            f"{server.url}/studies",
            data=b"".join(slow_body(parts, "final", 0)),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=final'},
            timeout=120,
        )
        assert stored.status_code == 200, stored.text
        found = requests.get(f"{server.url}/studies?StudyInstanceUID={study}", timeout=30)
        assert found.json()[0]["00201208"]["Value"] == [100]
    finally:
        stop_server(server)
