"""Settings: TOML + environment overrides, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiverd.config import load_settings
from archiverd.errors import ConfigError

GOOD = """
[[sources]]
kind = "docker"
path = "/var/lib/docker/containers"

[destination]
url = "s3://my-log-archive/prod/"
region = "eu-west-1"

[schedule]
upload_at = "*:00, *:30"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "archiverd.toml"
    path.write_text(text)
    return path


def test_toml_values_are_loaded(tmp_path: Path) -> None:
    """Keys in the TOML file reach the settings, normalized where documented."""
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.sources[0].kind == "docker"
    assert settings.destination.url == "s3://my-log-archive/prod/"
    assert settings.destination.region == "eu-west-1"
    assert settings.schedule.upload_at == "*:00,*:30"


def test_environment_overrides_one_key_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARCHIVERD_<SECTION>__<KEY> overrides that key only; sibling keys come from the file."""
    monkeypatch.setenv("ARCHIVERD_DESTINATION__REGION", "ap-south-1")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.destination.region == "ap-south-1"
    assert settings.destination.url == "s3://my-log-archive/prod/"


def test_embedded_defaults_archive_a_demo_source_to_a_file_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no file and no sources, a demo source goes to file://<state.dir>/bucket."""
    monkeypatch.setenv("ARCHIVERD_STATE__DIR", str(tmp_path))
    settings = load_settings(write(tmp_path, ""))
    assert settings.destination_url == (tmp_path / "bucket").as_uri()
    (source,) = settings.effective_sources
    assert (source.kind, source.path) == ("demo", tmp_path / "demo")


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """A --config that does not exist says so instead of silently using defaults."""
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.toml")
    assert str(caught.value) == (
        f"config file {str(tmp_path / 'nope.toml')!r} does not exist: pass an existing --config"
    )


@pytest.mark.parametrize("kind", ["directory", "special file"])
def test_a_config_that_is_no_regular_file_says_what_it_is(tmp_path: Path, kind: str) -> None:
    """A --config naming a directory or a device (a special file) is refused for what it
    is (it was called missing, which sends the user looking for a file that is there)."""
    path = tmp_path if kind == "directory" else Path("/dev/zero")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"config file {str(path)!r} is a {kind}, not a file: pass the TOML file as --config"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[destination]\nurl = "ftp://host/x"\n',
            "  destination.url = 'ftp://host/x': use s3://bucket/prefix/ or file:///absolute/dir"
            " (file key 'destination.url' or env ARCHIVERD_DESTINATION__URL)",
        ),
        (
            "[rotation]\nmax_segmnt_bytes = 5\n",
            "  rotation.max_segmnt_bytes = 5: unknown key: remove it or check its spelling against"
            " config/archiverd.toml (file key 'rotation.max_segmnt_bytes' or env"
            " ARCHIVERD_ROTATION__MAX_SEGMNT_BYTES)",
        ),
        (
            '[schedule]\nupload_at = "*:60"\n',
            "  schedule.upload_at = '*:60': bad time(s) ['*:60']: use comma-separated HH:MM or"
            " *:MM, e.g. '*:00,*:30' (file key 'schedule.upload_at' or env"
            " ARCHIVERD_SCHEDULE__UPLOAD_AT)",
        ),
        (
            '[http]\nlisten = "9464"\n',
            "  http.listen = '9464': use host:port, e.g. 127.0.0.1:9464"
            " (file key 'http.listen' or env ARCHIVERD_HTTP__LISTEN)",
        ),
        (
            '[[sources]]\nkind = "journald"\npath = "/x"\n',
            "  sources.0.kind = 'journald': Input should be 'docker', 'cri', 'directory' or"
            " 'demo' (file key 'sources.0.kind' or env ARCHIVERD_SOURCES__KIND)",
        ),
    ],
)
def test_bad_values_name_key_value_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    """Each invalid key is reported with its value, the fix, and both ways to set it."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"invalid configuration in {path}:\n{expected}"
    assert caught.value.exit_code == 78


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    """A bad secret setting is named but its value is hidden from the message."""
    path = write(tmp_path, "[destination]\nsecret_access_key = 12\nsecret_key = 'hunter2'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "hunter2" not in str(caught.value)
    assert "destination.secret_key = <hidden>" in str(caught.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigError naming the file, not a traceback."""
    path = write(tmp_path, "[destination\n")
    with pytest.raises(ConfigError, match=r"cannot read config file .*archiverd\.toml"):
        load_settings(path)


def test_host_comes_from_the_environment_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARCHIVERD_HOST names the key's host segment; a value with '/' is refused."""
    monkeypatch.setenv("ARCHIVERD_HOST", "node-7.example")
    assert load_settings(write(tmp_path, "")).host_name == "node-7.example"
    monkeypatch.setenv("ARCHIVERD_HOST", "a/b")
    with pytest.raises(ConfigError, match=r"host = 'a/b': use letters, digits"):
        load_settings(write(tmp_path, ""))
