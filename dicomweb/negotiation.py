"""Accept header parsing (RFC 9110 §12.5.1) and the choice of media type and transfer syntax
for each WADO-RS resource (PS3.18 8.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dicomweb.errors import NotAcceptable
from dicomweb.pixels.codecs import (
    default_transfer_syntax_for_media_type,
    media_type_for_transfer_syntax,
    transfer_syntaxes_for_media_type,
)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = frozenset(
    {EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, DEFLATED}
)
ANY = "*"

def media_type_of_syntax(transfer_syntax: str) -> str:
    """The media type of a frame in `transfer_syntax` (native: application/octet-stream)."""
    try:
        return media_type_for_transfer_syntax(transfer_syntax)
    except ValueError:
        return "application/octet-stream"


def syntaxes_of_media_type(media_type: str) -> tuple[str, ...]:
    """PS3.18 Table 8.7.3-5: the syntaxes a pixel media type carries, its default first."""
    allowed = transfer_syntaxes_for_media_type(media_type)
    if not allowed or media_type == "application/octet-stream":
        return ()
    default = default_transfer_syntax_for_media_type(media_type)
    return (default, *sorted(allowed - {default}))


_PARAM = re.compile(r'\s*;\s*([^=;,\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


@dataclass
class MediaRange:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    transfer_syntaxes: list[str] = field(default_factory=list)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """The type of the parts: `type=` of multipart/related, else the type itself."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "*/*").lower()
        return self.media_type

    @property
    def multipart(self) -> bool:
        return self.media_type.startswith("multipart/")

    def matches(self, media_type: str) -> bool:
        wanted = self.part_type
        if wanted in ("*/*", "*"):
            return True
        if wanted.endswith("/*"):
            return media_type.startswith(wanted[:-1])
        return wanted == media_type


def split_outside_quotes(header: str) -> list[str]:
    items, current, quoted = [], [], False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by decreasing quality; all `transfer-syntax` parameters are kept (OHIF
    sends two when a syntax is configured). Empty or absent → [*/*]."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for order, item in enumerate(split_outside_quotes(header)):
        media_type, _, rest = item.partition(";")
        media = MediaRange(media_type.strip().lower())
        for name, value in _PARAM.findall(";" + rest):
            name = name.lower()
            value = value.strip().strip('"')
            if name == "q":
                try:
                    media.q = float(value)
                except ValueError:
                    media.q = 0.0
            elif name == "transfer-syntax":
                media.transfer_syntaxes.append(value)
            else:
                media.params[name] = value
        ranges.append(media)
        media.params.setdefault("_order", str(order))
    ranges = [r for r in ranges if r.q > 0]
    ranges.sort(key=lambda r: (-r.q, int(r.params["_order"])))
    return ranges


@dataclass(frozen=True)
class Representation:
    """What goes out: the media type of each part, its transfer syntax, and whether the
    response is multipart."""

    media_type: str
    transfer_syntax: str
    multipart: bool


def choose_instance_representation(
    ranges: list[MediaRange], stored_syntax: str, *, can_produce: callable[[str], bool]
) -> Representation:
    """WADO-RS instances (PS3.18 8.7.3.5.2): application/dicom; without a transfer-syntax
    parameter the default is Explicit VR Little Endian; `*` means as stored."""
    for media in ranges:
        if not media.matches("application/dicom"):
            continue
        multipart = media.multipart or media.part_type in ("*/*", "*")
        for syntax in media.transfer_syntaxes or [EXPLICIT_VR_LITTLE_ENDIAN]:
            if syntax in (ANY, stored_syntax):
                return Representation("application/dicom", stored_syntax, multipart)
            if can_produce(syntax):
                return Representation("application/dicom", syntax, multipart)
    raise NotAcceptable(
        "none of the accepted media types can be produced for this resource "
        f"(stored transfer syntax {stored_syntax})"
    )


def choose_frame_representation(
    ranges: list[MediaRange], stored_syntax: str, *, can_produce: callable[[str], bool]
) -> Representation:
    """Frames and pixel bulk data (PS3.18 8.7.3.3.2 and 8.7.4): native as
    application/octet-stream (little endian), compressed as their own media type, or as
    stored when `transfer-syntax=*`."""
    stored_native = stored_syntax in NATIVE_SYNTAXES
    for media in ranges:
        part_type = media.part_type
        multipart = media.multipart or part_type in ("*/*", "*")
        syntaxes = media.transfer_syntaxes
        if part_type in ("*/*", "*", "application/*", "image/*", "video/*"):
            natural = EXPLICIT_VR_LITTLE_ENDIAN if stored_native else stored_syntax
            media_type = media_type_of_syntax(natural)
            if media.matches(media_type):
                return Representation(media_type, natural, multipart)
            continue
        if part_type == "application/octet-stream":
            if ANY in syntaxes:
                natural = EXPLICIT_VR_LITTLE_ENDIAN if stored_native else stored_syntax
                return Representation(part_type, natural, multipart)
            for syntax in syntaxes or [EXPLICIT_VR_LITTLE_ENDIAN]:
                if syntax == EXPLICIT_VR_LITTLE_ENDIAN and (stored_native or can_produce(syntax)):
                    return Representation(part_type, syntax, multipart)
                if syntax == stored_syntax:
                    return Representation(part_type, syntax, multipart)
            continue
        allowed = syntaxes_of_media_type(part_type)
        if not allowed:
            continue
        wanted = [s for s in syntaxes if s != ANY] or (
            [stored_syntax] if stored_syntax in allowed else [allowed[0]]
        )
        if ANY in syntaxes and stored_syntax in allowed:
            wanted = [stored_syntax]
        for syntax in wanted:
            if syntax not in allowed:
                continue
            if syntax == stored_syntax or can_produce(syntax):
                return Representation(part_type, syntax, multipart)
    raise NotAcceptable(
        f"none of the accepted media types can be produced for frames stored as {stored_syntax}"
    )


def accepts_json(ranges: list[MediaRange]) -> bool:
    """Metadata and QIDO: application/dicom+json (or application/json) wherever it appears
    (older OHIF versions list frame types first)."""
    return any(r.matches("application/dicom+json") or r.matches("application/json") for r in ranges)
