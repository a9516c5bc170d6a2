"""Settings from the environment and options: typed values, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomweb.cli import build_parser, settings_from
from dicomweb.config import ConfigError, Settings


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env({
        "DICOMWEB_PORT": "9000",
        "DICOMWEB_VIEWER": "yes",
        "DICOMWEB_CORS_ORIGINS": "http://a, http://b",
        "DICOMWEB_DUPLICATES": "OVERWRITE",
        "DICOMWEB_BLOB_DIR": "/tmp/blobs",
    })
    assert settings.port == 9000
    assert settings.viewer is True
    assert settings.cors_origins == ("http://a", "http://b")
    assert settings.duplicates == "overwrite"
    assert settings.blob_dir == Path("/tmp/blobs")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DICOMWEB_DUPLICATES", "maybe", "DICOMWEB_DUPLICATES='maybe': must be one of reject, "
                                         "overwrite"),
        ("DICOMWEB_PORT", "eighty", "DICOMWEB_PORT='eighty': must be an integer"),
        ("DICOMWEB_VIEWER", "perhaps", "DICOMWEB_VIEWER='perhaps': must be one of"),
        # out of range: each was taken silently before (a DIMSE port of 70000 ended in a
        # traceback from the DIMSE process)
        ("DICOMWEB_WORKERS", "0", "DICOMWEB_WORKERS=0: must be at least 1"),
        ("DICOMWEB_PORT", "99999", "DICOMWEB_PORT=99999: must be at most 65535"),
        ("DICOMWEB_DIMSE_PORT", "70000", "DICOMWEB_DIMSE_PORT=70000: must be at most 65535"),
        ("DICOMWEB_MAX_PARTS", "-1", "DICOMWEB_MAX_PARTS=-1: must be at least 1"),
        ("DICOMWEB_MAX_UPLOAD_BYTES", "0", "DICOMWEB_MAX_UPLOAD_BYTES=0: must be at least 1"),
        ("DICOMWEB_QIDO_MAX_RESULTS", "0", "DICOMWEB_QIDO_MAX_RESULTS=0: must be at least 1"),
        ("DICOMWEB_MAX_INFLATE_RATIO", "0", "DICOMWEB_MAX_INFLATE_RATIO=0: must be at least 1"),
        ("DICOMWEB_MAX_DECODED_BYTES", "-1", "DICOMWEB_MAX_DECODED_BYTES=-1: must be at least"),
        ("DICOMWEB_MAX_FRAMES_PER_REQUEST", "0", "DICOMWEB_MAX_FRAMES_PER_REQUEST=0: must be"),
        ("DICOMWEB_PIXEL_WAIT_SECONDS", "nan", "DICOMWEB_PIXEL_WAIT_SECONDS=nan: must be a finite"),
        ("DICOMWEB_SHUTDOWN_GRACE_SECONDS", "-5", "DICOMWEB_SHUTDOWN_GRACE_SECONDS=-5: must be at"),
        ("DICOMWEB_INGEST_PROCESSES", "-1", "DICOMWEB_INGEST_PROCESSES=-1: must be at least 0"),
        ("DICOMWEB_RESPONSE_CACHE_BYTES", "-1", "DICOMWEB_RESPONSE_CACHE_BYTES=-1: must be at"),
        ("DICOMWEB_PUBLIC_ROOT", "ftp://pacs", "DICOMWEB_PUBLIC_ROOT='ftp://pacs': must be an "
                                               "absolute http or https URL"),
        ("DICOMWEB_PUBLIC_ROOT", "/dicomweb", "DICOMWEB_PUBLIC_ROOT='/dicomweb': must be"),
        ("DICOMWEB_FORWARDED_ALLOW_IPS", "10.0.0.0/33", "DICOMWEB_FORWARDED_ALLOW_IPS: "
                                                        "'10.0.0.0/33' is not an address"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(says)
    assert "\n" not in str(raised.value)


def test_an_option_wins_over_the_environment_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DICOMWEB_PORT", "9000")
    def serve_settings(*options: str) -> Settings:
        return settings_from(build_parser().parse_args(["serve", *options]), "serve")

    assert serve_settings().port == 9000
    assert serve_settings("--port", "9001").port == 9001
    with pytest.raises(ConfigError, match="--port='x': must be an integer"):
        serve_settings("--port", "x")


def test_values_at_their_bounds_and_peer_names_are_taken() -> None:
    settings = Settings.from_env({
        "DICOMWEB_PORT": "65535", "DICOMWEB_WORKERS": "1", "DICOMWEB_INGEST_PROCESSES": "0",
        "DICOMWEB_SHUTDOWN_GRACE_SECONDS": "0", "DICOMWEB_PIXEL_WAIT_SECONDS": "0",
        "DICOMWEB_PUBLIC_ROOT": "https://pacs.example.org:8443/dicomweb/",
        "DICOMWEB_FORWARDED_ALLOW_IPS": "10.0.0.0/8,::1,*,proxy-host",
    })
    assert settings.public_root == "https://pacs.example.org:8443/dicomweb"
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "::1", "*", "proxy-host")


def test_to_env_round_trips(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, root_path="", port=1234, viewer=True).normalised()
    assert Settings.from_env(settings.to_env()) == settings
