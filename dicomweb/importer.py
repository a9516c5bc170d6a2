"""`dicomweb import`: files, folders (recursive) and zip archives through the STOW code path
(`Store.store_file`), with a progress bar and a summary."""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from dicomweb.config import Settings
from dicomweb.errors import InstanceRejected
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
    """One file to import: a path, or a member of a zip archive."""

    name: str
    path: Path
    member: str | None = None

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


def sources(paths: list[Path]) -> Iterator[Source]:
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from file_sources(child)
        elif path.is_file():
            yield from file_sources(path)
        else:
            yield Source(str(path), path)  # reported as failed: does not exist


def file_sources(path: Path) -> Iterator[Source]:
    if zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield Source(f"{path}!{info.filename}", path, info.filename)
    else:
        yield Source(str(path), path)


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
    copied: list[tuple[Source, Path]] = []
    for source in batch:
        temp = store.blobs.new_temp_path()
        try:
            with source.open() as reader, temp.open("wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            summary.failed.append((source.name, str(exc)))  # printed once, in the summary
            continue
        copied.append((source, temp))
    outcomes = store.store_files([temp for _, temp in copied])
    for (source, _), outcome in zip(copied, outcomes, strict=True):
        if isinstance(outcome, InstanceRejected):
            summary.failed.append((source.name, f"0x{outcome.reason:04X} {outcome.message}"))
        elif outcome.outcome == "duplicate":
            summary.duplicates += 1
        else:
            summary.stored += 1
