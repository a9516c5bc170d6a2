"""DICOMWEB_DIMSE_PEERS and DICOMWEB_DIMSE_DESTINATIONS: parsing, start-up checks, and which
principal an association gets."""

from __future__ import annotations

import pytest

from dicomweb.access import ALL_SCOPES, READ, WRITE
from dicomweb.config import ConfigError, Settings
from dicomweb.dimse.peers import (
    PeerTable,
    check_settings,
    parse_destinations,
    parse_peer,
    parse_peers,
)


def test_peer_syntax() -> None:
    peer = parse_peer("CT_SCANNER@10.1.2.3=write")
    assert (peer.ae_title, peer.host, peer.scopes, peer.labels) == (
        "CT_SCANNER", "10.1.2.3", frozenset({WRITE}), None)
    peer = parse_peer("RESEARCH=read+dicomweb:write/trial-a+trial-b")
    assert peer.scopes == frozenset({READ, WRITE})
    assert peer.labels == frozenset({"trial-a", "trial-b"})
    assert parse_peer("*=read").ae_title == "*"


@pytest.mark.parametrize("entry", [
    "NOSCOPES", "=read", "A=fly", "WAY_TOO_LONG_AE_TITLE=read", "A@not-an-ip=read",
    "A=read/", "A=read/bad label",
])
def test_bad_peer_entries_name_the_variable(entry: str) -> None:
    with pytest.raises(ConfigError, match="DICOMWEB_DIMSE_PEERS"):
        parse_peer(entry)


def test_destinations() -> None:
    found = parse_destinations(("PACS=pacs.example.org:104", "WS=[::1]:11112"))
    assert (found["PACS"].host, found["PACS"].port) == ("pacs.example.org", 104)
    assert (found["WS"].host, found["WS"].port) == ("::1", 11112)
    for bad in (("PACS=host",), ("PACS=host:0",), ("PACS=a:1", "PACS=b:2")):
        with pytest.raises(ConfigError, match="DICOMWEB_DIMSE_DESTINATIONS"):
            parse_destinations(bad)


def test_principal_of_an_association() -> None:
    table = PeerTable(parse_peers(("*=read", "CT=write", "WS@192.168.0.7=read+write")))
    assert table.principal("CT", "10.0.0.1").scopes == frozenset({WRITE})  # name wins over *
    assert table.principal("OTHER", "10.0.0.1").scopes == frozenset({READ})
    assert table.principal("WS", "192.168.0.7").scopes == frozenset({READ, WRITE})
    assert table.principal("WS", "192.168.0.8").scopes == frozenset({READ})  # falls to *
    strict = PeerTable(parse_peers(("CT=write",)))
    assert strict.principal("OTHER", "127.0.0.1") is None
    anyone = PeerTable([])  # open, as DICOMweb without credentials
    assert anyone.principal("ANY", "127.0.0.1").scopes == ALL_SCOPES
    assert anyone.principal("ANY", "127.0.0.1").kind == "dimse"


def test_no_peers_only_on_loopback() -> None:
    check_settings(Settings(dimse_port=11112))
    check_settings(Settings(host="::1", dimse_port=11112))
    with pytest.raises(ConfigError, match="DICOMWEB_DIMSE_PEERS"):
        check_settings(Settings(host="0.0.0.0", dimse_port=11112))
    check_settings(Settings(host="0.0.0.0", dimse_port=11112, dimse_peers=("CT=write",)))
    with pytest.raises(ConfigError, match="AE_TITLE"):
        check_settings(Settings(dimse_port=11112, ae_title="NAME WITH \\ BACKSLASH"))
