"""`dicomweb import --url URL PATH...`: send files to a running server with STOW-RS (PS3.18 10.5).

Files go in batches (one multipart/related request of up to BATCH_FILES files or BATCH_BYTES),
several batches at once. Before a batch is sent, one QIDO-RS query asks which of its SOP
Instance UIDs the server already has (UID list matching, PS3.18 8.3.4.1): those are skipped, so
an interrupted import run again sends only what is missing. The server stays the judge: a file
whose UIDs cannot be read here is sent anyway (alone, so its failure is its own), and if the
check fails everything is sent (the server answers duplicates as stored).
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import requests
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from dicomweb.importer import ARCHIVE_ERRORS, ImportSummary, Source, sources

log = logging.getLogger(__name__)

#: At most this many files, or this many bytes, in one STOW request.
BATCH_FILES = 32
BATCH_BYTES = 64 << 20
#: Batches in flight at once.
CONCURRENCY = 4
TIMEOUT_S = (10, 600)  # connect, read
# DICOM JSON tags of the STOW response (PS3.18 Table 10.5.3-2) and of QIDO results.
SOP_INSTANCE_UID = "00080018"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
ERROR_COMMENT = "00000902"


@dataclass(frozen=True)
class Upload:
    """One file to send, its size, and its SOP Instance UID if its header could be read."""

    source: Source
    size: int
    sop_instance_uid: str | None


@dataclass(frozen=True)
class Sent:
    stored: int
    skipped: int
    failed: list[tuple[str, str]]


def source_size(source: Source) -> int:
    if source.member is None:
        return source.path.stat().st_size
    with zipfile.ZipFile(source.path) as archive:
        return archive.getinfo(source.member).file_size


def read_sop_instance_uid(source: Source) -> str | None:
    try:
        with source.open() as fp:
            ds = dcmread(fp, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError):
        return None
    value = ds.get("SOPInstanceUID") or getattr(ds.get("file_meta"), "MediaStorageSOPInstanceUID",
                                                None)
    return str(value) if value else None


class MultipartBody(io.RawIOBase):
    """multipart/related; type="application/dicom" read part by part from the files, with a
    known length (sent with Content-Length, not chunked: not every server takes chunks)."""

    def __init__(self, uploads: list[Upload]) -> None:
        self.boundary = uuid.uuid4().hex
        self.segments: list[bytes | Upload] = []
        for upload in uploads:
            self.segments += [
                f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), upload,
                b"\r\n",
            ]
        self.segments.append(f"--{self.boundary}--\r\n".encode())
        self.length = sum(len(s) if isinstance(s, bytes) else s.size for s in self.segments)
        self._chunks = self._iterate()
        self._chunk = b""
        self._offset = 0

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def __len__(self) -> int:
        return self.length

    def _iterate(self) -> Iterator[bytes]:
        for segment in self.segments:
            if isinstance(segment, bytes):
                yield segment
                continue
            sent = 0
            with segment.source.open() as fp:
                while chunk := fp.read(1 << 20):
                    sent += len(chunk)
                    yield chunk
            if sent != segment.size:
                raise OSError(f"{segment.source.name} changed while it was being sent")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (http.client asks 16 KiB at a time): sliced from the current
        1 MiB chunk, never re-copying what is left of it."""
        out: list[bytes] = []
        wanted = self.length if size < 0 else size
        while wanted > 0:
            if self._offset >= len(self._chunk):
                next_chunk = next(self._chunks, None)
                if next_chunk is None:
                    break
                self._chunk, self._offset = next_chunk, 0
            piece = self._chunk[self._offset:self._offset + wanted]
            self._offset += len(piece)
            wanted -= len(piece)
            out.append(piece)
        return b"".join(out)


class DamagedMember(Exception):
    """An archive member turned out damaged (bad CRC, bad compression) while it was sent."""


DAMAGED_MEMBER = "the archive member is damaged (bad CRC or compression)"


class ServerUnusable(Exception):
    """The server cannot take the import at all (unreachable, refuses the credentials)."""


def reason_of(exc: BaseException) -> str:
    """The root cause of a requests error in a few words ("Connection refused"), not urllib3's
    whole chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending += [e for e in (current.__cause__, current.__context__,
                                getattr(current, "reason", None), *current.args)
                    if isinstance(e, BaseException)]
    return str(exc)


class StowClient:
    """STOW-RS and the already-stored check against one DICOMweb root."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):  # one keep-alive connection per thread
            self._local.session = requests.Session()
            self._local.session.headers.update(self.headers)
        return self._local.session

    def check(self) -> None:
        """One search before anything is sent: the server is there and lets us in."""
        try:
            response = self.session.get(f"{self.url}/studies", params={"limit": 1},
                                        timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise ServerUnusable(f"cannot reach {self.url}: {reason_of(exc)}") from None
        # 403 is no refusal: a key that may store but not search still imports (every file is
        # then sent, the server answering those it has as duplicates).
        if response.status_code == 401 or response.status_code >= 500:
            raise ServerUnusable(f"{self.url}: {http_failure(response)}")
        if response.status_code == 404:
            raise ServerUnusable(f"{self.url}: HTTP 404: not a DICOMweb root (no /studies)")

    def already_stored(self, sop_instance_uids: list[str]) -> set[str]:
        """Which of these the server has: one QIDO-RS query; nothing known if it fails."""
        if not sop_instance_uids:
            return set()
        try:
            response = self.session.get(
                f"{self.url}/instances",
                params={"SOPInstanceUID": ",".join(sop_instance_uids),
                        "includefield": SOP_INSTANCE_UID, "limit": len(sop_instance_uids)},
                timeout=TIMEOUT_S,
            )
            if response.status_code != 200:
                return set()
            return {item[SOP_INSTANCE_UID]["Value"][0] for item in response.json()
                    if item.get(SOP_INSTANCE_UID, {}).get("Value")}
        except (requests.RequestException, ValueError, KeyError, TypeError, IndexError):
            return set()

    def store_instances(self, uploads: list[Upload]) -> list[str | None]:
        """Send one batch; for each upload None (stored) or why it was not."""
        body = MultipartBody(uploads)
        try:
            response = self.session.post(
                f"{self.url}/studies", data=body, timeout=TIMEOUT_S,
                headers={"Content-Type": body.content_type,
                         "Accept": "application/dicom+json"})
        except ARCHIVE_ERRORS as exc:  # found only when the member's end is read
            raise DamagedMember(str(exc)) from exc
        except (requests.RequestException, OSError) as exc:
            return [f"not sent: {reason_of(exc)}"] * len(uploads)
        if response.status_code not in (200, 202, 409):
            return [http_failure(response)] * len(uploads)
        try:
            result = response.json() if response.content else {}
        except ValueError:
            result = {}
        return outcomes_of(result, uploads, response.status_code)


def http_failure(response: requests.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason or ""
    hint = " (give --token or DICOMWEB_TOKEN)" if response.status_code in (401, 403) else ""
    return f"HTTP {response.status_code} {message}{hint}".strip()


def outcomes_of(result: dict, uploads: list[Upload], status: int) -> list[str | None]:
    """Match the STOW response's Referenced and Failed SOP Sequences to the files sent."""
    referenced = {
        item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
        for item in result.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
    }
    failures: dict[str | None, str] = {}
    for item in result.get(FAILED_SOP_SEQUENCE, {}).get("Value", []):
        sop = item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
        reason = item.get(FAILURE_REASON, {}).get("Value", [None])[0]
        comment = item.get(ERROR_COMMENT, {}).get("Value", [""])[0]
        code = f"0x{reason:04X}" if isinstance(reason, int) else "failed"
        failures.setdefault(sop, f"{code} {comment}".strip())
    out: list[str | None] = []
    for upload in uploads:
        sop = upload.sop_instance_uid
        if sop in failures:
            out.append(failures[sop])
        elif sop in referenced or (status == 200 and sop is not None):
            out.append(None)
        elif sop is None and len(uploads) == 1 and failures:
            out.append(next(iter(failures.values())))  # sent alone: the one failure is its own
        elif sop is None and status == 200:
            out.append(None)
        else:
            out.append(f"HTTP {status}: not in the server's response")
    return out


def batches(items: list[Source]) -> Iterator[list[Source]]:
    batch: list[Source] = []
    for source in items:
        batch.append(source)
        if len(batch) == BATCH_FILES:
            yield batch
            batch = []
    if batch:
        yield batch


def send_batch(client: StowClient, batch: list[Source]) -> Sent:
    failed: list[tuple[str, str]] = []
    uploads: list[Upload] = []
    for source in batch:
        if source.error:
            failed.append((source.name, source.error))
            continue
        try:
            uploads.append(Upload(source, source_size(source), read_sop_instance_uid(source)))
        except ARCHIVE_ERRORS as exc:
            log.info("import %s: %r", source.name, exc)
            failed.append((source.name, DAMAGED_MEMBER))
        except (OSError, KeyError) as exc:
            failed.append((source.name, getattr(exc, "strerror", None) or str(exc)))
    stored_already = client.already_stored([u.sop_instance_uid for u in uploads
                                            if u.sop_instance_uid])
    to_send = [u for u in uploads if u.sop_instance_uid not in stored_already]
    skipped = len(uploads) - len(to_send)
    stored = 0
    readable = [u for u in to_send if u.sop_instance_uid]
    requests_to_make = [[u] for u in to_send if not u.sop_instance_uid] + list(
        size_limited(readable))
    for group in requests_to_make:
        for upload, failure in zip(group, store_group(client, group), strict=True):
            if failure is None:
                stored += 1
            else:
                failed.append((upload.source.name, failure))
    return Sent(stored, skipped, failed)


def store_group(client: StowClient, group: list[Upload]) -> list[str | None]:
    """One request; when a member of it proves damaged on the way, each is sent alone so
    that only the damaged one fails (what the cut request stored is a duplicate then)."""
    try:
        return client.store_instances(group)
    except DamagedMember as exc:
        if len(group) == 1:
            log.info("import %s: %s", group[0].source.name, exc)
            return [DAMAGED_MEMBER]
    return [outcome for upload in group for outcome in store_group(client, [upload])]


def size_limited(uploads: list[Upload]) -> Iterator[list[Upload]]:
    group: list[Upload] = []
    size = 0
    for upload in uploads:
        if group and size + upload.size > BATCH_BYTES:
            yield group
            group, size = [], 0
        group.append(upload)
        size += upload.size
    if group:
        yield group


def import_through_server(url: str, token: str | None, paths: list, *,
                          progress: bool = True) -> ImportSummary:
    """Send every file under `paths` to the DICOMweb root `url`; the same summary as a local
    import (already stored instances count as duplicates). Raises ServerUnusable first if
    the server cannot be used at all."""
    client = StowClient(url, token)
    client.check()
    summary = ImportSummary()
    items = list(sources(paths))
    with tqdm(total=len(items), unit="file", disable=not progress, desc="import") as bar, \
            ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="stow") as pool:
        futures = {pool.submit(send_batch, client, batch): len(batch)
                   for batch in batches(items)}
        for future in as_completed(futures):
            sent = future.result()
            summary.stored += sent.stored
            summary.duplicates += sent.skipped
            summary.failed += sent.failed
            bar.update(futures[future])
    summary.failed.sort()
    return summary
