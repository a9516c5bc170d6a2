"""Hot instance locations (dicomweb/locations.py): least recently used entries go first, a
deleted blob is a miss (never old bytes), and only representations of the stored bytes take
the short path."""

from __future__ import annotations

from pathlib import Path

from dicomweb.locations import (
    LocationCache,
    direct_representation,
    hot_location,
    read_frames,
)

ELE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def test_lru_eviction_and_drop_matching(tmp_path: Path) -> None:
    cache = LocationCache(max_entries=2)
    entry = hot_location(tmp_path / "a", ELE, [[[0, 4]]])
    assert entry is not None
    cache.put(("s", "1", "a"), entry)
    cache.put(("s", "1", "b"), entry)
    assert cache.get(("s", "1", "a")) is entry  # now the most recent
    cache.put(("s", "2", "c"), entry)
    assert cache.get(("s", "1", "b")) is None and len(cache) == 2
    cache.drop_matching("s", "2", None)
    assert cache.get(("s", "2", "c")) is None and cache.get(("s", "1", "a")) is entry
    cache.drop_matching("s", None, None)
    assert len(cache) == 0


def test_reads_ranges_and_misses_when_the_blob_is_gone(tmp_path: Path) -> None:
    blob = tmp_path / "blob.dcm"
    blob.write_bytes(b"0123456789")
    entry = hot_location(blob, ELE, [[[2, 3]], [[5, 2], [0, 1]]])
    assert read_frames(entry, [1, 2]) == [b"234", b"560"]
    assert read_frames(entry, [3]) is None  # no such frame: the full path says so
    blob.unlink()
    assert read_frames(entry, [1]) is None
    blob.write_bytes(b"01")  # shorter than the index says
    assert read_frames(entry, [1]) is None


def test_big_endian_is_never_hot_and_conversions_take_the_full_path() -> None:
    assert hot_location(Path("x"), "1.2.840.10008.1.2.2", [[[0, 2]]]) is None
    assert hot_location(Path("x"), ELE, None) is None
    octets = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    assert direct_representation(octets, ELE).transfer_syntax == ELE
    assert direct_representation(octets, JPEG_BASELINE).transfer_syntax == JPEG_BASELINE
    to_native = 'multipart/related; type="application/octet-stream"'
    assert direct_representation(to_native, JPEG_BASELINE) is None  # a decode
    assert direct_representation("image/png", ELE) is None  # a 406
