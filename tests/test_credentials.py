"""One credential source for S3 and KMS: explicit keys (or files) before the default chain."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archiverd.config import DestinationSettings, EncryptionSettings
from archiverd.credentials import MAX_SECRET_FILE_BYTES, resolve_credentials
from archiverd.errors import ConfigError
from archiverd.pack.keyring import _default_kms_factory


def _file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_all_three_from_files_sign_s3_and_kms(tmp_path: Path) -> None:
    """Key, secret and session token from files; the KMS client signs with the same ones."""
    settings = DestinationSettings(
        access_key_id_file=_file(tmp_path / "id", "AKIDFROMFILE"),
        secret_access_key_file=_file(tmp_path / "secret", "s" * 40),
        session_token_file=_file(tmp_path / "token", "TOKEN123"),
    )
    credentials = resolve_credentials(settings)
    assert credentials.client_arguments() == {
        "aws_access_key_id": "AKIDFROMFILE",
        "aws_secret_access_key": "s" * 40,
        "aws_session_token": "TOKEN123",
    }
    encryption = EncryptionSettings(wrap="kms", kms_key_id="k", kms_region="us-east-1")
    kms = _default_kms_factory(encryption, credentials)()
    signed = kms._request_signer._credentials  # what botocore will sign KMS calls with
    assert (signed.access_key, signed.token) == ("AKIDFROMFILE", "TOKEN123")


def test_explicit_keys_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit keys are used even when AWS_* variables are set; none means the chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e" * 40)
    explicit = DestinationSettings(access_key_id="AKIDEXPLICIT", secret_access_key="x" * 40)
    assert resolve_credentials(explicit).client_arguments()["aws_access_key_id"] == "AKIDEXPLICIT"
    assert resolve_credentials(DestinationSettings()).client_arguments() == {}


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    """The resolved credentials print their source, never a value."""
    settings = DestinationSettings(
        access_key_id="AKIDSECRETID", secret_access_key="VERYSECRET" * 4, session_token="TOK"
    )
    shown = repr(resolve_credentials(settings)) + str(settings)
    assert "VERYSECRET" not in shown
    assert "AKIDSECRETID" not in shown
    assert "TOK'" not in shown


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"access_key_id": "AKID"}, "must be set together"),
        ({"session_token": "TOK"}, "session_token"),
    ],
)
def test_half_set_credentials_are_config_errors(values: dict[str, str], words: str) -> None:
    """A key without its secret, or a token without keys, is a ConfigError naming the keys."""
    with pytest.raises(ConfigError, match=words):
        resolve_credentials(DestinationSettings(**values))  # type: ignore[arg-type]


def test_kubernetes_style_symlink_inside_the_directory_is_read(tmp_path: Path) -> None:
    """key -> ..data/key (a Secret volume) is fine: the target stays in the directory."""
    data = tmp_path / "..2026_12_01"
    data.mkdir()
    _file(data / "token", "TOK")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "token").symlink_to("..data/token")
    settings = DestinationSettings(
        access_key_id="AKID", secret_access_key="x" * 40, session_token_file=tmp_path / "token"
    )
    assert resolve_credentials(settings).client_arguments()["aws_session_token"] == "TOK"


def test_unsafe_secret_files_are_refused(tmp_path: Path) -> None:
    """A symlink out of its directory, a directory, a FIFO or a huge file: ConfigError."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _file(outside / "secret", "x" * 40)
    home = tmp_path / "creds"
    home.mkdir()
    (home / "link").symlink_to(outside / "secret")
    (home / "dir").mkdir()
    os.mkfifo(home / "fifo")
    (home / "big").write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    cases = {"link": "outside", "dir": "not a regular file", "fifo": "not a regular file",
             "big": "more than a credential"}  # fmt: skip
    for name, words in cases.items():
        settings = DestinationSettings(access_key_id="AKID", secret_access_key_file=home / name)
        with pytest.raises(ConfigError, match=words):
            resolve_credentials(settings)


def test_file_found_in_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd LoadCredential=: the file is looked up by name in $CREDENTIALS_DIRECTORY."""
    creds = tmp_path / "creds"
    creds.mkdir()
    _file(creds / "aws-session-token", "TOKFROMSYSTEMD")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = DestinationSettings(
        access_key_id="AKID", secret_access_key="x" * 40,
        session_token_file=Path("/nonexistent/aws-session-token"),
    )  # fmt: skip
    assert resolve_credentials(settings).client_arguments()["aws_session_token"] == "TOKFROMSYSTEMD"
