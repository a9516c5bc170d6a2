"""Reading uploads: non-DICOM rejected from its first bytes, noise after a plausible start
rejected at once, deflated data bounded before it is inflated, bare datasets still taken."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from factory import PYDICOM_FILES, image, to_bytes
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomweb.errors import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    InstanceRejected,
)
from dicomweb.ingest import ingest_file
from dicomweb.part10 import MAX_ITEMS, InflateLimits, check_inflation, dataset_start, prepend

BARE_FILES = ["ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "rtstruct.dcm"]


def rejection(path: Path, limits: InflateLimits = InflateLimits()) -> InstanceRejected:
    with pytest.raises(InstanceRejected) as caught:
        ingest_file(path, limits=limits)
    return caught.value


def part10_head_and_dataset() -> tuple[bytes, bytes]:
    raw = to_bytes(image())
    start = dataset_start(raw[:4096])
    assert start is not None
    return raw[:start], raw[start:]


@pytest.mark.parametrize("name", BARE_FILES)
def test_bare_datasets_of_pydicom_are_still_taken(tmp_path: Path, name: str) -> None:
    (source,) = [p for p in PYDICOM_FILES if p.name == name]
    path = tmp_path / name
    shutil.copy(source, path)
    ingested = ingest_file(path)
    stored = path.read_bytes()
    assert stored[128:132] == b"DICM" and stored.endswith(source.read_bytes())
    assert ingested.sop_instance_uid == dcmread(source, force=True).SOPInstanceUID


def test_prepend_keeps_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "f"
    body = bytes(range(256)) * 9000  # more than one 1 MiB step
    path.write_bytes(body)
    prepend(path, b"HEADER")
    assert path.read_bytes() == b"HEADER" + body


@pytest.mark.parametrize("content", [
    b"\x00" * (32 << 20),  # formerly parsed element by element: 10-22 s of CPU
    b"GIF89a" + b"\x01" * (8 << 20),
    b"%PDF-1.7\n" * 100_000,
    b"\x08",
])
def test_non_dicom_is_rejected_from_its_first_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    started = time.process_time()
    rejected = rejection(path)
    assert time.process_time() - started < 1.0
    assert rejected.reason == CANNOT_UNDERSTAND
    assert "not a DICOM file" in rejected.message


@pytest.mark.parametrize("noise", [b"\x00" * (32 << 20), b"\xfe\xff\x00\xe0" * (8 << 20)])
def test_noise_after_a_plausible_start_is_rejected_at_once(tmp_path: Path, noise: bytes) -> None:
    head, dataset = part10_head_and_dataset()
    for content in (head + noise, head + dataset[:40] + noise, dataset[:40] + noise):
        path = tmp_path / "upload"
        path.write_bytes(content)
        started = time.process_time()
        rejected = rejection(path)
        assert time.process_time() - started < 1.0, rejected.message
        assert rejected.reason in (CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                   OUT_OF_RESOURCES)


def deflated_file(tmp_path: Path, zeros: int) -> Path:
    """A Deflated Explicit VR Little Endian instance whose dataset carries `zeros` zero bytes
    in a private OB element (deflated to ~1/1000 of that)."""
    ds = image()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.private_block(0x0009, "TEST", create=True).add_new(0x00, "OB", bytes(zeros))
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_deflated_dataset_within_limits_is_stored(tmp_path: Path) -> None:
    ingested = ingest_file(deflated_file(tmp_path, 1 << 20))
    assert ingested.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"


def test_bytes_after_the_deflated_stream_end_the_inflation_check(tmp_path: Path) -> None:
    """CPython keeps bytes after the end of a deflate stream in `unconsumed_tail` once a
    `max_length` was hit: the check looped forever on a pad byte after 1 MiB of output."""
    path = deflated_file(tmp_path, (1 << 20) + 1262)
    with path.open("ab") as fp:
        fp.write(b"\x00")
    head = path.read_bytes()[:4096]
    worker = threading.Thread(target=check_inflation, args=(path, head, InflateLimits()),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the inflation check does not end"


def test_deflated_dataset_past_the_absolute_cap_is_refused(tmp_path: Path) -> None:
    rejected = rejection(deflated_file(tmp_path, 4 << 20), InflateLimits(max_bytes=2 << 20))
    assert rejected.reason == OUT_OF_RESOURCES
    assert "DICOMWEB_MAX_INFLATED_BYTES" in rejected.message


def test_deflate_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    # ~20 KB that inflates to 64 MiB (the 1 MB inflated to 3.2 GB)
    path = deflated_file(tmp_path, 64 << 20)
    assert path.stat().st_size < 200_000
    started = time.process_time()
    rejected = rejection(path)
    assert time.process_time() - started < 2.0
    assert rejected.reason == OUT_OF_RESOURCES
    assert "DICOMWEB_MAX_INFLATE_RATIO" in rejected.message


def with_sequence_items(item: bytes, count: int) -> bytes:
    """Our instance with an undefined-length sequence of `count` copies of `item` inserted
    before Study Date."""
    raw = to_bytes(image())
    at = raw.index(b"\x08\x00\x20\x00DA")
    sequence = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + item * count
    return raw[:at] + sequence + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + raw[at:]


EMPTY_ITEM = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
#: An item holding one Referenced SOP Instance UID: 40 bytes.
SMALL_ITEM = b"\xfe\xff\x00\xe0\x20\x00\x00\x00" + b"\x08\x00\x55\x11UI\x18\x00" + b"1" * 24


def test_a_flood_of_empty_sequence_items_is_refused_before_parsing(tmp_path: Path) -> None:
    # 4 MB of empty items formerly took 35 s and 430 MB to parse.
    path = tmp_path / "items.dcm"
    path.write_bytes(with_sequence_items(EMPTY_ITEM, 500_000))
    started = time.process_time()
    rejected = rejection(path)
    assert time.process_time() - started < 1.0
    assert "flood of empty items" in rejected.message


def test_more_sequence_items_than_the_cap_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "items.dcm"
    path.write_bytes(with_sequence_items(SMALL_ITEM, MAX_ITEMS + 1))
    rejected = rejection(path)
    assert rejected.reason == OUT_OF_RESOURCES and str(MAX_ITEMS) in rejected.message


def test_many_real_items_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "items.dcm"
    path.write_bytes(with_sequence_items(SMALL_ITEM, 20_000))
    assert len(ingest_file(path).dataset.ReferencedImageSequence) == 20_000


def test_a_flood_of_big_endian_items_is_refused_too(tmp_path: Path) -> None:
    """Little endian files are searched for little endian item tags only; a file whose File
    Meta names explicit VR big endian is searched for big endian ones as well."""
    from io import BytesIO

    from pydicom import dcmwrite
    from pydicom.uid import ExplicitVRBigEndian

    ds = image()
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    raw = buffer.getvalue()
    at = raw.index(b"\x00\x08\x00\x20DA")
    flood = (b"\x00\x08\x11\x40SQ\x00\x00\xff\xff\xff\xff"
             + b"\xff\xfe\xe0\x00\x00\x00\x00\x00" * 500_000
             + b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")
    path = tmp_path / "items-be.dcm"
    path.write_bytes(raw[:at] + flood + raw[at:])
    started = time.process_time()
    rejected = rejection(path)
    assert time.process_time() - started < 1.0
    assert "flood of empty items" in rejected.message


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_small_files_parsed_from_memory_give_what_the_file_gives(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files up to IN_MEMORY_BYTES are read once and parsed from memory: the same rows, JSON,
    frame ranges and rejections as parsing from the file."""
    from dicomweb import part10
    from dicomweb.ingest import parse_part

    def ingested(limit: int) -> object:
        copy = tmp_path / f"{limit}.dcm"
        shutil.copyfile(path, copy)
        monkeypatch.setattr(part10, "IN_MEMORY_BYTES", limit)
        outcome = parse_part(copy)
        if hasattr(outcome, "dataset"):
            outcome.dataset = None
            outcome.file_path = None
        return outcome

    from_memory, from_file = ingested(1 << 40), ingested(-1)
    assert type(from_memory) is type(from_file)
    if hasattr(from_file, "instance_row"):
        assert from_memory.instance_row == from_file.instance_row
        assert from_memory.study_row == from_file.study_row
        assert from_memory.warnings == from_file.warnings
    else:
        assert (from_memory.reason, from_memory.message) == (from_file.reason, from_file.message)
