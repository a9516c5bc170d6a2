"""The blob folder: one file per instance, written atomically (temp file, fsync, rename).

Keys are built from digests of the UIDs, never from the UIDs themselves, so no attribute value
can name a path outside the folder. Temp files are locked (flock) by the process writing them
from creation until they are consumed: a sweeper that can take the lock knows the writer is
dead, so orphans are removed within a minute without touching a live upload of another worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import BinaryIO

log = logging.getLogger(__name__)

#: A temp file this young may still be between its creation and its lock: never swept.
TEMP_MIN_AGE_S = 10.0


#: sync_file_range(2) flag: start writing the range's dirty pages, do not wait.
SYNC_FILE_RANGE_WRITE = 2


def _writeback_starter() -> Callable[[int], object] | None:
    """libc's sync_file_range, starting a whole file's writeback, where there is one (Linux);
    ctypes releases the GIL around it."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return lambda fd: function(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


START_WRITEBACK = _writeback_starter()


def uid_digest(uid: str) -> str:
    return hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _sync_file(path: Path) -> None:
    with path.open("rb+") as fp:
        os.fdatasync(fp.fileno())


class BlobStore:
    def __init__(self, root: Path) -> None:
        """Creates nothing: `create_folders` does, once the configuration is known to work."""
        self.root = root
        self._root_name = str(root)
        self.tmp_dir = root / ".tmp"
        self._sync_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fdatasync")
        #: Lock descriptors of this process's temp files, by path.
        self._temp_locks: dict[Path, int] = {}
        self._temp_locks_guard = threading.Lock()

    # --- temp files ---------------------------------------------------------------------

    def create_folders(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def new_temp_path(self) -> Path:
        """A new empty file on the blob filesystem (so committing it is a rename, not a copy),
        locked until the store consumes it or `discard` removes it. Write it in place."""
        path = self.tmp_dir / f"{os.urandom(16).hex()}.part"  # a third of uuid4's cost
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with self._temp_locks_guard:
            self._temp_locks[path] = fd
        return path

    def open_temp(self, temp_path: Path) -> BinaryIO:
        """A file object writing the new temp file through its lock's descriptor (no second
        open of the path); closing it keeps the lock."""
        with self._temp_locks_guard:
            fd = self._temp_locks.get(temp_path)
        if fd is None:
            return temp_path.open("wb")
        return open(fd, "wb", closefd=False)  # noqa: SIM115 (the caller closes it)

    def discard(self, temp_path: Path) -> None:
        """Remove a temp file (if it is still there) and drop its lock. A temp file whose
        lock is gone was committed (renamed) or discarded already: nothing to remove (one
        failing unlink less per stored instance); should one be left, the sweep takes it."""
        with self._temp_locks_guard:
            held = temp_path in self._temp_locks
        if held:
            temp_path.unlink(missing_ok=True)
            self._unlock(temp_path)

    def _sync_temp(self, temp_path: Path) -> None:
        """Data on disk before the rename; through the lock's descriptor when there is one."""
        with self._temp_locks_guard:
            fd = self._temp_locks.get(temp_path)
        if fd is None:
            _sync_file(temp_path)
        else:
            os.fdatasync(fd)

    def _unlock(self, temp_path: Path) -> None:
        with self._temp_locks_guard:
            fd = self._temp_locks.pop(temp_path, None)
        if fd is not None:
            os.close(fd)

    def sweep_temp_files(self, min_age_s: float = TEMP_MIN_AGE_S) -> int:
        """Remove temp files whose writer is gone (their lock is free), and drop this process's
        locks of temp files someone removed. Returns how many files were removed."""
        with self._temp_locks_guard:
            mine = dict(self._temp_locks)
        for path, fd in mine.items():
            if os.fstat(fd).st_nlink == 0:
                self._unlock(path)
        removed = 0
        deadline = time.time() - min_age_s
        for path in self.tmp_dir.glob("*.part"):
            if path not in mine and _remove_if_orphan(path, deadline):
                removed += 1
        return removed

    # --- blobs --------------------------------------------------------------------------

    @staticmethod
    def new_key(study: str, series: str, sop: str) -> str:
        """Each stored version gets a unique key, so a new file never replaces one the index
        still points to. Digests keep a study's files in one folder, and cannot hold `..`."""
        return (f"{uid_digest(study)}/{uid_digest(series)}/{uid_digest(sop)}."
                f"{os.urandom(6).hex()}.dcm")

    def commit(self, temp_path: Path, key: str) -> None:
        """Move a complete temp file into place: data on disk first, then the rename."""
        self._sync_temp(temp_path)
        self._move(temp_path, key)

    def _move(self, temp_path: Path, key: str) -> None:
        target = self._file(key)
        try:
            os.replace(temp_path, target)
        except FileNotFoundError:  # first instance of its series: make the folders once
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp_path, target)
        self._unlock(temp_path)

    def _file(self, key: str) -> Path:
        """The file of a key. Keys made by older versions hold the UIDs themselves (they stay
        readable); one that would lead outside the folder names no blob of this store."""
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FileNotFoundError(f"blob key {key!r} is outside the blob folder")
        return self.root / relative

    def file_name(self, key: str) -> str:
        """`path` as a string, by the same rule, without pathlib: a series retrieve opens
        hundreds of files, and making the Path took 7 µs of the 17 µs of each open."""
        names = [name for name in key.split("/") if name not in ("", ".")]
        if key.startswith("/") or ".." in names or not names:
            raise FileNotFoundError(f"blob key {key!r} is outside the blob folder")
        return f"{self._root_name}/{key}"

    def commit_many(self, items: list[tuple[Path, str]]) -> None:
        """`commit` for a batch: every file on disk (fdatasync), then the renames. The disk
        writes the files together: their writeback is started for all first (so the first
        fdatasync's journal commit covers the others, which then find little to wait for),
        in this thread; without sync_file_range, the fdatasyncs run in threads at once."""
        if len(items) == 1:
            self.commit(*items[0])
            return
        if START_WRITEBACK is None:
            list(self._sync_pool.map(self._sync_temp, [path for path, _ in items]))
        else:
            self._sync_together([path for path, _ in items], START_WRITEBACK)
        for path, key in items:
            self._move(path, key)

    def _sync_together(self, paths: list[Path], start_writeback: Callable[[int], object]) -> None:
        with self._temp_locks_guard:
            held = [self._temp_locks.get(path) for path in paths]
        opened: list[int] = []  # files this process did not create (e.g. DIMSE receives)
        try:
            descriptors = []
            for path, fd in zip(paths, held, strict=True):
                if fd is None:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                    opened.append(fd)
                descriptors.append(fd)
            for fd in descriptors:
                start_writeback(fd)  # a hint (its errors do not matter): fdatasync decides
            for fd in descriptors:
                os.fdatasync(fd)
        finally:
            for fd in opened:
                os.close(fd)

    def path(self, key: str) -> Path:
        return self._file(key)

    def remove(self, key: str) -> None:
        try:
            path = self._file(key)
        except FileNotFoundError:
            log.warning("not removing blob key %r: it is outside the blob folder", key)
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune_empty_parents(path)

    def _prune_empty_parents(self, path: Path) -> None:
        for parent in list(path.parents)[:2]:
            try:
                parent.rmdir()
            except OSError:
                return

    def read_ranges(self, key: str, ranges: list[list[int]]) -> bytes:
        """Bytes of one frame or bulk element: one open, one pread per range."""
        fd = os.open(self._file(key), os.O_RDONLY)
        try:
            return b"".join(os.pread(fd, length, offset) for offset, length in ranges)
        finally:
            os.close(fd)

    def iter_file(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self._file(key).open("rb") as fp:
            while chunk := fp.read(chunk_size):
                yield chunk


def _remove_if_orphan(path: Path, deadline: float) -> bool:
    """Remove a temp file no live process holds the lock of (and older than `deadline`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        status = os.fstat(fd)
        if status.st_mtime > deadline:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        if os.stat(path).st_ino != status.st_ino:
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
