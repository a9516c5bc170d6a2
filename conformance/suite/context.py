"""Per-run state shared by the checks: the HTTP client, the data and upload answers."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from .client import Client, encode_multipart, expect_status, json_list
from .data import Instance, Study, TestData
from .registry import CheckFailed


@dataclass
class Upload:
    """The server's answer to the STOW-RS request that uploaded one study."""

    study: Study
    status: int
    content_type: str
    body: bytes
    error: str = ""


@dataclass
class Context:
    """Passed to every check."""

    client: Client
    data: TestData
    uploads: dict[str, Upload] = field(default_factory=dict)
    cleanup: bool = True
    notes: dict[str, object] = field(default_factory=dict)

    # -- setup -----------------------------------------------------------------
    def upload_all(self) -> None:
        """STOW-RS every generated study with one ``POST {url}/studies`` each."""
        for study in self.data.studies.values():
            body, ctype = encode_multipart([i.data for i in study.instances])
            try:
                resp = self.client.post("studies", body, ctype)
            except requests.RequestException as exc:
                self.uploads[study.key] = Upload(study, 0, "", b"", error=repr(exc))
                continue
            self.uploads[study.key] = Upload(
                study, resp.status_code, resp.headers.get("Content-Type", ""), resp.content
            )

    def require_uploaded(self, key: str = "main") -> Study:
        """The study ``key``, failing the calling check if its upload did not succeed."""
        up = self.uploads.get(key)
        if up is None or up.error or up.status not in (200, 202):
            reason = up.error if up and up.error else f"HTTP {up.status if up else '-'}"
            raise CheckFailed(f"setup: upload of {key!r} study failed ({reason})")
        return up.study

    # -- helpers for checks ----------------------------------------------------
    def search(self, path: str, query: str = "") -> list[dict[str, object]]:
        """Run a QIDO-RS search expecting 200 (or 204 = no match) and return datasets."""
        resp = self.client.qido(path, query)
        if resp.status_code == 204:
            return []
        expect_status(resp, 200)
        return json_list(resp)

    def study_uids(self, query: str) -> set[str]:
        return {uid for ds in self.search("studies", query) if (uid := string(ds, "0020000D"))}

    def instance(self, key: str = "main", index: int = 0) -> Instance:
        return self.require_uploaded(key).instances[index]


def values(ds: dict[str, object], tag: str) -> list[object]:
    """The ``Value`` list of ``tag`` in a DICOM JSON dataset, or ``[]``."""
    element = ds.get(tag.upper()) or ds.get(tag.lower())
    if not isinstance(element, dict):
        return []
    value = element.get("Value")
    return value if isinstance(value, list) else []


def string(ds: dict[str, object], tag: str) -> str | None:
    """First value of ``tag`` as text (PN: the Alphabetic group)."""
    found = values(ds, tag)
    if not found:
        return None
    first = found[0]
    if isinstance(first, dict):
        alpha = first.get("Alphabetic")
        return alpha if isinstance(alpha, str) else None
    return str(first)


def has_tag(ds: dict[str, object], tag: str) -> bool:
    return tag.upper() in ds or tag.lower() in ds
