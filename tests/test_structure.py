"""Nesting and sequence contents bounded before pydicom parses an upload: sequences nested
too deep and floods of items or elements are refused with 0xA700 in a fraction of the time
pydicom would take (which recursed out, or held ~1 KB per element, before); every real file
of pydicom and pydicom-data is walked without a refusal and without under-counting."""

from __future__ import annotations

import importlib.util
import struct
import time
import zlib
from io import BytesIO
from pathlib import Path

import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import FAILED, image, stow_items, to_bytes
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomweb.errors import OUT_OF_RESOURCES, InstanceRejected
from dicomweb.ingest import ingest_file
from dicomweb.part10 import dataset_start, part10_header
from dicomweb.structure import MAX_NESTED_ELEMENTS, MAX_SEQUENCE_DEPTH, check_structure

SEQUENCE = b"\x40\x00\x75\x02"  # (0040,0275) Request Attributes Sequence, little endian
ITEM, ITEM_END, SEQUENCE_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0"
UNDEFINED = b"\xff\xff\xff\xff"
ZERO = b"\x00\x00\x00\x00"
#: (0040,1001) Requested Procedure ID, SH of 16 characters: 24 bytes.
ELEMENT = b"\x40\x00\x01\x10SH\x10\x00" + b"A" * 16


def delimited_nesting(depth: int) -> bytes:
    """`depth` sequences of undefined length, each in the single item of the one above."""
    opening = SEQUENCE + b"SQ\x00\x00" + UNDEFINED + ITEM + UNDEFINED
    closing = ITEM_END + ZERO + SEQUENCE_END + ZERO
    return opening * depth + closing * depth


def unknown_vr_nesting(depth: int) -> bytes:
    """The same as UN of undefined length: implicit VR inside (PS3.5 6.2.2)."""
    opening = SEQUENCE + b"UN\x00\x00" + UNDEFINED + ITEM + UNDEFINED
    inner = SEQUENCE + UNDEFINED + ITEM + UNDEFINED
    closing = ITEM_END + ZERO + SEQUENCE_END + ZERO
    return opening + inner * (depth - 1) + closing * depth


def defined_nesting(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        item = ITEM + struct.pack("<I", len(inner)) + inner
        inner = SEQUENCE + b"SQ\x00\x00" + struct.pack("<I", len(item)) + item
    return inner


def items_of_one_element(count: int) -> bytes:
    item = ITEM + struct.pack("<I", len(ELEMENT)) + ELEMENT
    return SEQUENCE + b"SQ\x00\x00" + UNDEFINED + item * count + SEQUENCE_END + ZERO


def one_item_of(count: int) -> bytes:
    """One item holding `count` elements (a private tag's repeated elements, 12 bytes each;
    tag order inside an item is not checked before pydicom)."""
    elements = b"".join(struct.pack("<HH", 0x0009, 0x1000 + n % 0xF000) + b"SH\x04\x00ABCD"
                        for n in range(count))
    return (SEQUENCE + b"SQ\x00\x00" + UNDEFINED + ITEM + UNDEFINED + elements + ITEM_END
            + ZERO + SEQUENCE_END + ZERO)


def instance_with(sequence: bytes) -> bytes:
    """Our instance with `sequence` inserted where (0040,0275) belongs: before Pixel Data."""
    raw = to_bytes(image())
    at = raw.index(b"\xe0\x7f\x10\x00")
    return raw[:at] + sequence + raw[at:]


def deflated(raw: bytes) -> bytes:
    """The same instance as Deflated Explicit VR Little Endian."""
    start = dataset_start(raw[:4096])
    assert start is not None
    ds = dcmread(BytesIO(raw))
    meta = part10_header(ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return meta + compressor.compress(raw[start:]) + compressor.flush()


def refused(tmp_path: Path, data: bytes) -> tuple[InstanceRejected, float]:
    path = tmp_path / "upload.dcm"
    path.write_bytes(data)
    started = time.process_time()
    with pytest.raises(InstanceRejected) as caught:
        ingest_file(path)
    return caught.value, time.process_time() - started


@pytest.mark.parametrize("nesting", [delimited_nesting, defined_nesting, unknown_vr_nesting],
                         ids=["delimited", "defined-length", "un-implicit"])
def test_sequences_nested_too_deep_are_refused(tmp_path: Path, nesting) -> None:
    path = tmp_path / "deepest.dcm"
    path.write_bytes(instance_with(nesting(MAX_SEQUENCE_DEPTH)))
    ingest_file(path)  # as deep as allowed: stored
    rejected, cpu = refused(tmp_path, instance_with(nesting(MAX_SEQUENCE_DEPTH + 1)))
    assert rejected.reason == OUT_OF_RESOURCES
    assert f"nests sequences more than {MAX_SEQUENCE_DEPTH} deep" in rejected.message
    # 10,000 levels: 360 KB that used to end in a RecursionError, refused as quickly
    rejected, cpu = refused(tmp_path, instance_with(nesting(10_000)))
    assert rejected.reason == OUT_OF_RESOURCES and cpu < 0.5


def test_a_deep_nesting_inside_deflated_data_is_refused(tmp_path: Path) -> None:
    raw = instance_with(delimited_nesting(MAX_SEQUENCE_DEPTH + 1))
    rejected, _ = refused(tmp_path, deflated(raw))
    assert "nests sequences" in rejected.message


@pytest.mark.parametrize("flood", [lambda n: items_of_one_element(n // 2 + 1),
                                   lambda n: one_item_of(n + 1)],
                         ids=["items", "elements-in-one-item"])
def test_more_nested_elements_than_the_cap_are_refused_before_parsing(tmp_path: Path,
                                                                       flood) -> None:
    # 125,001 items of one element each: 5 MB that pydicom took 5.4 s and 230 MiB for (and
    # 36 MB of them 1.8 GB and two minutes): refused by the walk alone.
    rejected, cpu = refused(tmp_path, instance_with(flood(MAX_NESTED_ELEMENTS)))
    assert rejected.reason == OUT_OF_RESOURCES
    assert str(MAX_NESTED_ELEMENTS) in rejected.message
    assert cpu < 2.0, cpu


def test_nested_elements_within_the_cap_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "items.dcm"
    path.write_bytes(instance_with(items_of_one_element(20_000)))
    assert len(ingest_file(path).dataset.RequestAttributesSequence) == 20_000


def real_files() -> list[Path]:
    """pydicom's test files and pydicom-data's (the `data_store` package), Part 10 only."""
    folders = [Path(get_testdata_file("CT_small.dcm")).parent]
    if spec := importlib.util.find_spec("data_store"):
        folders += [Path(p) for p in spec.submodule_search_locations or []]
    found = {p for folder in folders for p in folder.rglob("*") if p.is_file()}
    return sorted(p for p in found if p.read_bytes()[128:132] == b"DICM")


def nested_count(ds) -> int:
    """Items and the elements in them, at every level, as pydicom reads them."""
    count = 0
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                count += 1 + len(item) + nested_count(item)
    return count


def test_every_real_file_is_walked_without_refusal_or_under_counting() -> None:
    files = real_files()
    assert len(files) > 100
    for path in files:
        structure = check_structure(path)
        try:
            ds = dcmread(path)
            expected = nested_count(ds)
        except Exception:  # a file pydicom itself cannot read: only the walk must not fail
            continue
        assert structure.nested_elements >= expected, (path.name, structure, expected)


def test_a_hostile_nesting_over_http_is_refused_with_its_reason(server: Server,
                                                                 tmp_path: Path) -> None:
    body = instance_with(delimited_nesting(5_000))
    response = requests.post(f"{server.url}/studies", data=body,
                             headers={"Content-Type": "application/dicom"}, timeout=60)
    assert response.status_code == 409, response.text
    (failed,) = stow_items(response.json(), FAILED)
    assert failed["00081197"]["Value"] == [OUT_OF_RESOURCES]
    assert "nests sequences" in failed["00000902"]["Value"][0]
    assert requests.get(f"{server.url}/studies", timeout=30).status_code in (200, 204)



def test_a_flood_after_an_undefined_length_value_is_still_counted(tmp_path: Path) -> None:
    # pydicom reads an undefined-length value that is not fragments up to the first sequence
    # delimiter and goes on after it: so must the walk, or what follows goes uncounted.
    garbage = (b"\x09\x00\x10\x10OB\x00\x00" + UNDEFINED + b"not fragments" * 10
               + SEQUENCE_END + ZERO)
    raw = instance_with(garbage + items_of_one_element(MAX_NESTED_ELEMENTS // 2 + 1))
    rejected, cpu = refused(tmp_path, raw)
    assert str(MAX_NESTED_ELEMENTS) in rejected.message and cpu < 2.0


def test_the_cap_is_a_setting(backend, tmp_path: Path) -> None:
    """DICOMWEB_MAX_NESTED_ELEMENTS lowers (or raises, for whole-slide images) the cap."""
    running = start_server(tmp_path / "data", backend,
                           env={"DICOMWEB_MAX_NESTED_ELEMENTS": "1000"})
    try:
        def stow(count: int) -> requests.Response:
            return requests.post(f"{running.url}/studies",
                                 data=instance_with(items_of_one_element(count)),
                                 headers={"Content-Type": "application/dicom"}, timeout=60)

        assert stow(500).status_code == 200  # 1,000 nested: items and their elements
        refused_answer = stow(501)
        assert refused_answer.status_code == 409
        (failed,) = stow_items(refused_answer.json(), FAILED)
        assert "DICOMWEB_MAX_NESTED_ELEMENTS" in failed["00000902"]["Value"][0]
    finally:
        stop_server(running)


def test_the_dimse_uid_check_does_not_parse_a_flood_before_ingest(tmp_path: Path) -> None:
    """C-STORE compares the command's UIDs with the data set's, read with pydicom up to
    (0008,0018) when the head is not plain: a sequence before them (DICOMDIR's (0004,1220))
    was parsed whole there, before the walk could bound it."""
    from dicomweb.dimse.storage import parsed_uids

    flood = (b"\x04\x00\x20\x12SQ\x00\x00" + UNDEFINED
             + (ITEM + struct.pack("<I", len(ELEMENT)) + ELEMENT) * 200_000
             + SEQUENCE_END + ZERO)
    raw = to_bytes(image())
    start = dataset_start(raw[:4096])
    assert start is not None
    path = tmp_path / "cstore.dcm"
    path.write_bytes(raw[:start] + flood + raw[start:])
    started = time.process_time()
    parsed_uids(path)
    assert time.process_time() - started < 1.0
    rejected, _ = refused(tmp_path, path.read_bytes())
    assert str(MAX_NESTED_ELEMENTS) in rejected.message


def test_a_flood_in_a_bare_data_set_is_bounded_too(tmp_path: Path) -> None:
    """A data set without the Part 10 header is read up to its SOP UIDs to make one: a
    sequence after them was parsed whole there, before the walk."""
    raw = to_bytes(image())
    start = dataset_start(raw[:4096])
    assert start is not None
    bare = instance_with(items_of_one_element(MAX_NESTED_ELEMENTS // 2 + 1))[start:]
    rejected, cpu = refused(tmp_path, bare)
    assert str(MAX_NESTED_ELEMENTS) in rejected.message
    assert cpu < 2.0, cpu
