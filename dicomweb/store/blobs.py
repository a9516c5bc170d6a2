"""The blob folder: one file per instance, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _sync_file(path: Path) -> None:
    with path.open("rb+") as fp:
        os.fdatasync(fp.fileno())


class BlobStore:
    def __init__(self, root: Path) -> None:
        """Creates nothing: `create_folders` does, once the configuration is known to work."""
        self.root = root
        self.tmp_dir = root / ".tmp"
        self._sync_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fdatasync")

    def create_folders(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def new_temp_path(self) -> Path:
        """A path on the blob filesystem, so committing it is a rename, not a copy."""
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    @staticmethod
    def new_key(study: str, series: str, sop: str) -> str:
        """Each stored version gets a unique key, so a new file never replaces one the index
        still points to."""
        return f"{study}/{series}/{sop}.{uuid.uuid4().hex[:12]}.dcm"

    def commit(self, temp_path: Path, key: str) -> None:
        """Move a complete temp file into place: data on disk first, then the rename."""
        _sync_file(temp_path)
        self._move(temp_path, key)

    def _move(self, temp_path: Path, key: str) -> None:
        target = self.root / key
        try:
            os.replace(temp_path, target)
        except FileNotFoundError:  # first instance of its series: make the folders once
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp_path, target)

    def commit_many(self, items: list[tuple[Path, str]]) -> None:
        """`commit` for a batch: the fdatasyncs wait on the disk together, then the renames."""
        if len(items) == 1:
            self.commit(*items[0])
            return
        list(self._sync_pool.map(_sync_file, [path for path, _ in items]))
        for path, key in items:
            self._move(path, key)

    def path(self, key: str) -> Path:
        return self.root / key

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()
        self._prune_empty_parents(self.root / key)

    def _prune_empty_parents(self, path: Path) -> None:
        for parent in list(path.parents)[:2]:
            try:
                parent.rmdir()
            except OSError:
                return

    def read_ranges(self, key: str, ranges: list[list[int]]) -> bytes:
        """Bytes of one frame or bulk element: one open, one pread per range."""
        fd = os.open(self.root / key, os.O_RDONLY)
        try:
            return b"".join(os.pread(fd, length, offset) for offset, length in ranges)
        finally:
            os.close(fd)

    def iter_file(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with (self.root / key).open("rb") as fp:
            while chunk := fp.read(chunk_size):
                yield chunk

    def sweep_temp_files(self, older_than_s: float = 24 * 3600) -> int:
        """Remove temp files left by a crash mid-upload (never referenced by the index).
        Only old ones: another worker may be receiving an upload right now."""
        count = 0
        deadline = time.time() - older_than_s
        for path in self.tmp_dir.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < deadline:
                    path.unlink()
                    count += 1
        return count
