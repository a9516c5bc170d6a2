"""Who may talk to the DIMSE service and where C-MOVE sends: `DICOMWEB_DIMSE_PEERS` and
`DICOMWEB_DIMSE_DESTINATIONS`, parsed once at start-up into typed values.

Peers (comma-separated entries, `DICOMWEB_DIMSE_PEERS`):

    AET[@host]=scope[+scope...][/label[+label...]]

- `AET` is the calling AE title of the peer, or `*` for any AE title.
- `@host` (optional, an IP address) also requires the association to come from that
  address: AE titles are sent by the peer and prove nothing on their own.
- scopes are the DICOMweb ones, short or full: `read` (C-FIND, C-MOVE, C-GET), `write`
  (C-STORE, Storage Commitment); `dicomweb:read`, `dicomweb:write`, `delete`, `admin` are
  accepted too. C-ECHO needs no scope.
- labels (optional) are the peer's, as a DICOMweb principal's: the studies it stores get
  them, and with `--study-access labels` it sees only studies carrying one of them.

Destinations (comma-separated entries, `DICOMWEB_DIMSE_DESTINATIONS`): `AET=host:port`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from dicomweb.access import ADMIN, ALL_SCOPES, DELETE, READ, WRITE, Principal, configured_principal
from dicomweb.access.authenticate import is_loopback
from dicomweb.config import ConfigError, Settings

ANY_AE = "*"
SCOPE_NAMES = {
    "read": READ,
    "write": WRITE,
    "delete": DELETE,
    "admin": ADMIN,
    READ: READ,
    WRITE: WRITE,
    DELETE: DELETE,
    ADMIN: ADMIN,
}
LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
PEERS_VARIABLE = "DICOMWEB_DIMSE_PEERS"
DESTINATIONS_VARIABLE = "DICOMWEB_DIMSE_DESTINATIONS"


@dataclass(frozen=True)
class Peer:
    ae_title: str  # or ANY_AE
    host: str | None
    scopes: frozenset[str]
    labels: frozenset[str] | None


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int


def check_ae_title(text: str, source: str) -> str:
    """PS3.5 Table 6.2-1 AE: 1-16 characters of the default repertoire, no backslash, no
    control characters; leading and trailing spaces are not significant."""
    title = text.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isascii() or not title.isprintable():
        raise ConfigError(f"{source}: {text!r} is not an AE title (1-16 printable characters)")
    return title


def parse_peer(entry: str) -> Peer:
    source = f"{PEERS_VARIABLE} entry {entry!r}"
    who, equals, rights = entry.partition("=")
    if not equals or not who.strip():
        raise ConfigError(f"{source}: expected AET[@host]=scope[+scope][/label[+label]]")
    title, _, host = who.strip().partition("@")
    title = title.strip()
    if title != ANY_AE:
        title = check_ae_title(title, source)
    scope_text, slash, label_text = rights.partition("/")
    scopes = set()
    for name in filter(None, (s.strip() for s in scope_text.split("+"))):
        if name.lower() not in SCOPE_NAMES:
            raise ConfigError(f"{source}: unknown scope {name!r} (use read, write)")
        scopes.add(SCOPE_NAMES[name.lower()])
    labels = None
    if slash:
        labels = frozenset(filter(None, (v.strip() for v in label_text.split("+"))))
        if not labels or not all(LABEL.match(v) for v in labels):
            raise ConfigError(f"{source}: labels are letters, digits and _.:- joined by +")
    address = host.strip().strip("[]") or None
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ConfigError(f"{source}: {host!r} is not an IP address") from None
    return Peer(title, address, frozenset(scopes), labels)


def parse_destination(entry: str) -> Destination:
    source = f"{DESTINATIONS_VARIABLE} entry {entry!r}"
    title, equals, address = entry.partition("=")
    host, colon, port_text = address.strip().rpartition(":")
    if not equals or not colon or not host or not port_text.isdigit():
        raise ConfigError(f"{source}: expected AET=host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: port must be 1-65535")
    return Destination(check_ae_title(title, source), host.strip("[]"), port)


def parse_peers(entries: tuple[str, ...]) -> list[Peer]:
    return [parse_peer(entry) for entry in entries]


def parse_destinations(entries: tuple[str, ...]) -> dict[str, Destination]:
    found: dict[str, Destination] = {}
    for entry in entries:
        destination = parse_destination(entry)
        if destination.ae_title in found:
            raise ConfigError(f"{DESTINATIONS_VARIABLE}: {destination.ae_title} is listed twice")
        found[destination.ae_title] = destination
    return found


def check_settings(settings: Settings) -> None:
    """Start-up checks; ConfigError names the setting."""
    check_ae_title(settings.ae_title, "DICOMWEB_AE_TITLE")
    peers = parse_peers(settings.dimse_peers)
    parse_destinations(settings.dimse_destinations)
    if not peers and not is_loopback(settings.host):
        raise ConfigError(
            f"{PEERS_VARIABLE} is empty but the DIMSE service would listen on "
            f"{settings.host}: list the AE titles that may connect, or bind to 127.0.0.1"
        )


class PeerTable:
    """Calling AE title (and address) → the Principal of the association, or None."""

    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers

    def principal(self, ae_title: str, address: str) -> Principal | None:
        title = ae_title.strip()
        if not self.peers:  # none configured: a loopback bind (check_settings), open to all,
            return Principal("dimse", title, ALL_SCOPES)  # as DICOMweb without credentials
        # An entry naming the AE title wins over `*`, whatever the order.
        for wanted in (title, ANY_AE):
            for peer in self.peers:
                if peer.ae_title == wanted and (peer.host is None or same_host(peer.host, address)):
                    return configured_principal("dimse", title, peer.scopes, peer.labels)
        return None


def same_host(configured: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(configured) == ipaddress.ip_address(address)
    except ValueError:
        return False
