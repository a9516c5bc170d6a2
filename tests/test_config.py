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


def test_to_env_round_trips(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, root_path="", port=1234, viewer=True).normalised()
    assert Settings.from_env(settings.to_env()) == settings
