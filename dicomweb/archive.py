"""Study and series download as a ZIP file (`Accept: application/zip`, as dcm4chee offers).

The archive is streamed: each stored file is read in 1 MiB pieces and sent as it goes, with
its size and CRC in a data descriptor after it (PS: APPNOTE.TXT 4.3.9), so a study of any
size needs no memory and no temporary file. Files are stored as they were received, byte for
byte, without compression (pixel data gains little; CPU is better spent elsewhere), with ZIP64
fields so archives beyond 4 GiB work.

Names read like a viewer's tree and are unique inside the archive:
`PatientID Patient Name/StudyDate Study Description/Modality SeriesNumber Series Description/
Modality000001.dcm` (the instance number; the SOP Instance UID when it is missing or repeats).
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from dicomweb.errors import NotFound
from dicomweb.store.blobs import BlobStore
from dicomweb.store.repository import ArchiveRow

MEDIA_TYPE = "application/zip"
PIECE_BYTES = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._,()+=\-\u00C0-\uFFFF]+")
MAX_NAME = 64


def clean(text: str, fallback: str) -> str:
    """A path component made of what the value holds: no separators, no `..`, no controls."""
    value = " ".join(_UNSAFE.sub("_", text.replace("^", " ")).split()).strip(" ._")
    return value[:MAX_NAME].strip(" ._") or fallback


def entry_names(rows: list[ArchiveRow]) -> list[str]:
    names: list[str] = []
    taken: set[str] = set()
    for row in rows:
        patient = clean(f"{row.patient_id} {row.patient_name}", "patient")
        study = clean(f"{row.study_date} {row.study_description}", row.study_instance_uid)
        number = "" if row.series_number is None else str(row.series_number)
        series = clean(f"{row.modality} {number} {row.series_description}",
                       row.series_instance_uid)
        modality = clean(row.modality, "IM").replace(" ", "")
        stem = (f"{modality}{row.instance_number:06d}" if row.instance_number is not None
                else clean(row.sop_instance_uid, "instance"))
        name = f"{patient}/{study}/{series}/{stem}.dcm"
        if name.lower() in taken:
            name = f"{patient}/{study}/{series}/{stem}-{clean(row.sop_instance_uid, 'x')}.dcm"
        taken.add(name.lower())
        names.append(name)
    return names


class _Pipe:
    """A write-only, unseekable file for ZipFile: what is written waits in `pending`."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.pending += data
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.pending)
        self.pending.clear()
        return out


def open_files(blobs: BlobStore, rows: list[ArchiveRow]) -> list[BinaryIO]:
    """Every file of the archive, open (404 if one is gone): after the status line nothing
    can be missing."""
    files: list[BinaryIO] = []
    try:
        for row in rows:
            try:
                files.append(blobs.path(row.blob_key).open("rb", buffering=0))
            except FileNotFoundError:
                raise NotFound(f"instance {row.sop_instance_uid} has just been deleted") from None
    except BaseException:
        for fp in files:
            fp.close()
        raise
    return files


def stream_zip(files: list[BinaryIO], rows: list[ArchiveRow]) -> Iterator[bytes]:
    """The archive in pieces of about PIECE_BYTES; each file is closed once sent."""
    pipe = _Pipe()
    now = time.localtime()[:6]
    try:
        with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
            for fp, name in zip(files, entry_names(rows), strict=True):
                info = zipfile.ZipInfo(name, date_time=now)
                info.compress_type = zipfile.ZIP_STORED
                with fp, zf.open(info, "w", force_zip64=True) as member:
                    while chunk := fp.read(PIECE_BYTES):
                        member.write(chunk)
                        if len(pipe.pending) >= PIECE_BYTES:
                            yield pipe.take()
                if len(pipe.pending) >= PIECE_BYTES:
                    yield pipe.take()
        yield pipe.take()
    finally:
        for fp in files:
            fp.close()
