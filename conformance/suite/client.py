"""A defensive HTTP layer: timeouts, tolerant JSON and multipart/related parsing.

Nothing here trusts the server: HTML error pages, empty bodies, invalid JSON and
malformed multipart payloads become :class:`~.registry.CheckFailed` with a short,
readable detail instead of crashing the run.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import urljoin

import orjson
import requests

from .registry import UNSUPPORTED_STATUSES, CheckFailed, NotSupported

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_OCTET = 'multipart/related; type="application/octet-stream"'


@dataclass
class Part:
    """One body part of a multipart/related payload."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class Client:
    """Thin wrapper around :class:`requests.Session` bound to a DICOMweb base URL."""

    base_url: str
    timeout: float = 30.0
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def resolve(self, uri: str) -> str:
        """Resolve a (possibly relative) URI returned by the server, e.g. a BulkDataURI."""
        if uri.startswith(("http://", "https://")):
            return uri
        if uri.startswith("/"):
            return urljoin(self.base_url, uri)
        return urljoin(self.base_url.rstrip("/") + "/", uri)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> requests.Response:
        return self.session.request(
            method,
            self.url(path),
            headers=headers,
            data=data,
            params=params,
            timeout=self.timeout,
            allow_redirects=True,
        )

    def get(self, path: str, accept: str | None = None, **headers: str) -> requests.Response:
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        if accept is not None:
            hdrs["Accept"] = accept
        return self.request("GET", path, headers=hdrs)

    def qido(self, path: str, query: str = "") -> requests.Response:
        """GET a search resource; ``query`` is sent verbatim (already percent-encoded)."""
        target = path + ("?" + query if query else "")
        return self.get(target, accept=DICOM_JSON)

    def post(self, path: str, body: bytes, content_type: str) -> requests.Response:
        headers = {"Content-Type": content_type, "Accept": DICOM_JSON}
        return self.request("POST", path, headers=headers, data=body)


def describe(resp: requests.Response) -> str:
    """A short description of a response for check details."""
    ctype = resp.headers.get("Content-Type", "-")
    snippet = resp.content[:80].decode("utf-8", "replace").replace("\n", " ").strip()
    return f"HTTP {resp.status_code} ({ctype}){': ' + snippet if snippet else ''}"


def expect_status(resp: requests.Response, *codes: int, optional: bool = False) -> None:
    """Fail unless the status is one of ``codes``; 404/405/501 mean *not supported* if
    the feature is ``optional``."""
    if resp.status_code in codes:
        return
    if optional and resp.status_code in UNSUPPORTED_STATUSES:
        raise NotSupported(describe(resp))
    wanted = "/".join(str(c) for c in codes)
    raise CheckFailed(f"expected {wanted}, got {describe(resp)}")


def json_body(resp: requests.Response) -> object:
    """Parse a JSON body, failing with a readable detail on HTML/empty/invalid payloads."""
    if not resp.content.strip():
        raise CheckFailed(f"empty body where JSON was expected ({describe(resp)})")
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError as exc:
        raise CheckFailed(f"invalid JSON: {exc}; {describe(resp)}") from None


def json_list(resp: requests.Response) -> list[dict[str, object]]:
    """Parse a DICOM JSON array of datasets (QIDO results, metadata)."""
    body = json_body(resp)
    if not isinstance(body, list) or not all(isinstance(x, dict) for x in body):
        raise CheckFailed(f"expected a JSON array of objects, got {type(body).__name__}")
    return body


def json_object(resp: requests.Response) -> dict[str, object]:
    body = json_body(resp)
    if not isinstance(body, dict):
        raise CheckFailed(f"expected a JSON object, got {type(body).__name__}")
    return body


_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


def media_params(content_type: str) -> dict[str, str]:
    """Parameters of a media type, lower-cased names, unquoted values."""
    params: dict[str, str] = {}
    for name, value in _PARAM_RE.findall(content_type):
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        params[name.lower()] = value
    return params


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def multipart_parts(resp: requests.Response) -> list[Part]:
    """Split a multipart/related response into parts, failing on malformed payloads."""
    ctype = resp.headers.get("Content-Type", "")
    if media_type(ctype) != "multipart/related":
        raise CheckFailed(f"expected multipart/related, got {describe(resp)}")
    boundary = media_params(ctype).get("boundary")
    if not boundary:
        raise CheckFailed(f"multipart response without boundary: {ctype!r}")
    return split_multipart(resp.content, boundary)


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise CheckFailed(f"multipart body has no parts delimited by {boundary!r}")
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # close delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            if chunk.startswith(b"\r\n"):  # part without headers
                head, content = b"", chunk[2:]
            else:
                raise CheckFailed("multipart part without header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
    return parts


def encode_multipart(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """Build a multipart/related body; returns ``(body, content_type)``."""
    boundary = "conformance-" + uuid.uuid4().hex
    out = bytearray()
    for content in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="{part_type}"; boundary={boundary}'
