"""`dicomweb import`: files, folders (recursive) and zip archives through the STOW code path
(`Store.store_file`), with a progress bar and a summary."""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from dicomweb.config import Settings
from dicomweb.errors import InstanceRejected
from dicomweb.part10 import RATIO_FLOOR_BYTES
from dicomweb.store.repository import Store

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"stored: {self.stored}, duplicates: {self.duplicates}, failed: {len(self.failed)}"
        ]
        lines += [f"  failed {name}: {reason}" for name, reason in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class Source:
    """One file to import: a path, or a member of a zip archive (`error`: why it cannot be)."""

    name: str
    path: Path
    member: str | None = None
    declared_size: int | None = None  # of a member, as its archive says (may lie)
    compressed_size: int | None = None
    error: str | None = None

    def open(self) -> AbstractContextManager[BinaryIO]:
        if self.member is None:
            return self.path.open("rb")
        return _ZipMember(self.path, self.member)


class _ZipMember(AbstractContextManager):  # type: ignore[type-arg]
    def __init__(self, archive: Path, member: str) -> None:
        self.archive = zipfile.ZipFile(archive)
        self.member = member

    def __enter__(self) -> BinaryIO:
        return self.archive.open(self.member)  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.archive.close()


class SourceRejected(Exception):
    """A file or archive member that is not imported; the message says why, in words."""


#: What reading an archive member raises when the member is damaged or unreadable.
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def sources(paths: list[Path]) -> Iterator[Source]:
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from file_sources(child)
        elif path.is_file():
            yield from file_sources(path)
        else:
            yield Source(str(path), path, error="does not exist")


def file_sources(path: Path) -> Iterator[Source]:
    if path.suffix.lower() != ".zip" or not zipfile.is_zipfile(path):
        yield Source(str(path), path)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
    except (OSError, *ARCHIVE_ERRORS) as exc:
        log.info("cannot read the archive %s: %r", path, exc)
        yield Source(str(path), path, error="the zip archive is damaged")
        return
    for info in members:
        yield Source(f"{path}!{info.filename}", path, info.filename,
                     info.file_size, info.compress_size)


@dataclass(frozen=True)
class CopyLimits:
    max_bytes: int  # Settings.max_upload_bytes: no member larger than a STOW body
    max_ratio: int  # Settings.max_inflate_ratio


def copy_bounded(source: Source, writer: BinaryIO, limits: CopyLimits) -> None:
    """Copy a file or member to `writer`, stopping as soon as it is larger, or a member
    inflates more, than the limits allow (zip bombs): sizes in the archive may lie."""
    if source.declared_size is not None and source.declared_size > limits.max_bytes:
        raise SourceRejected(member_too_large(limits.max_bytes))
    written = 0
    with source.open() as reader:
        while chunk := reader.read(1 << 20):
            written += len(chunk)
            if written > limits.max_bytes:
                raise SourceRejected(member_too_large(limits.max_bytes))
            compressed = source.compressed_size
            if compressed is not None and written > RATIO_FLOOR_BYTES and (
                written > limits.max_ratio * max(compressed, 1)
            ):
                raise SourceRejected(
                    f"the archive member inflates more than {limits.max_ratio} times "
                    "(DICOMWEB_MAX_INFLATE_RATIO)")
            writer.write(chunk)


def member_too_large(max_bytes: int) -> str:
    return f"larger than {max_bytes} bytes (DICOMWEB_MAX_UPLOAD_BYTES)"


#: Files stored together (the STOW batch path): one index transaction per batch.
BATCH_SIZE = 32


def import_paths(settings: Settings, paths: list[Path], *, progress: bool = True) -> ImportSummary:
    store = Store(settings)
    store.create_schema()
    store.recover()
    summary = ImportSummary()
    items = list(sources(paths))
    try:
        with tqdm(total=len(items), unit="file", disable=not progress, desc="import") as bar:
            for start in range(0, len(items), BATCH_SIZE):
                batch = items[start : start + BATCH_SIZE]
                import_batch(store, batch, summary)
                bar.update(len(batch))
    finally:
        store.close()
    return summary


def import_batch(store: Store, batch: list[Source], summary: ImportSummary) -> None:
    limits = CopyLimits(store.settings.max_upload_bytes, store.settings.max_inflate_ratio)
    copied: list[tuple[Source, Path]] = []
    for source in batch:
        if source.error:
            fail(summary, source, source.error)
            continue
        temp = store.blobs.new_temp_path()
        try:
            with temp.open("wb") as writer:
                copy_bounded(source, writer, limits)
        except SourceRejected as exc:
            store.blobs.discard(temp)
            fail(summary, source, str(exc))
            continue
        except ARCHIVE_ERRORS as exc:  # e.g. a bad CRC: that member only
            store.blobs.discard(temp)
            log.info("import %s: %r", source.name, exc)
            fail(summary, source, "the archive member is damaged (bad CRC or compression)")
            continue
        except OSError as exc:
            store.blobs.discard(temp)
            fail(summary, source, exc.strerror or str(exc))
            continue
        copied.append((source, temp))
    outcomes = store.store_files([temp for _, temp in copied])
    for (source, _), outcome in zip(copied, outcomes, strict=True):
        if isinstance(outcome, InstanceRejected):
            fail(summary, source, f"0x{outcome.reason:04X} {outcome.message}")
        elif outcome.outcome == "duplicate":
            summary.duplicates += 1
        else:
            summary.stored += 1


def fail(summary: ImportSummary, source: Source, reason: str) -> None:
    """Recorded for the summary, which prints each failure once (the log says it at info)."""
    summary.failed.append((source.name, reason))
    log.info("import %s failed: %s", source.name, reason)
