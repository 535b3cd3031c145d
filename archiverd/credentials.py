"""The one AWS credential source for everything archiverd talks to (S3 and KMS).

Precedence, highest first:

1. explicit keys: ``destination.access_key_id`` + ``secret_access_key`` (+ ``session_token``
   for temporary keys), each value or its ``*_file``; a file is also looked up by name in
   systemd's $CREDENTIALS_DIRECTORY;
2. botocore's default chain: ``AWS_*`` variables, the shared profile, web identity (IRSA),
   container and instance metadata (temporary credentials refreshed before they expire).

A secret file must be a regular file of at most `MAX_SECRET_FILE_BYTES`; a symlink is
followed only when it stays inside the file's own directory (Kubernetes secret volumes link
``key -> ..data/key``), never out of it. Secret values are never logged: they stay
`SecretStr` until handed to botocore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from archiverd.config import DestinationSettings
from archiverd.errors import ConfigError, FileRefusedError
from archiverd.fsutil import credentials_directory, read_small_file

MAX_SECRET_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class AwsCredentials:
    """Explicit credentials, or none (botocore's default chain decides)."""

    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    source: str = "the AWS default chain"
    """Where they came from, for messages: never the values themselves."""

    def client_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``session.create_client`` (empty: the default chain)."""
        if self.access_key_id is None or self.secret_access_key is None:
            return {}
        args = {
            "aws_access_key_id": self.access_key_id.get_secret_value(),
            "aws_secret_access_key": self.secret_access_key.get_secret_value(),
        }
        if self.session_token is not None:
            args["aws_session_token"] = self.session_token.get_secret_value()
        return args

    def __repr__(self) -> str:
        return f"AwsCredentials(source={self.source!r})"


def resolve_credentials(settings: DestinationSettings) -> AwsCredentials:
    """The credentials `settings` configure; `ConfigError` for half-set or unreadable ones."""
    key = _value(settings.access_key_id, settings.access_key_id_file, "access_key_id")
    secret = _value(
        settings.secret_access_key, settings.secret_access_key_file, "secret_access_key"
    )
    token = _value(settings.session_token, settings.session_token_file, "session_token")
    if (key is None) != (secret is None):
        raise ConfigError(
            "destination.access_key_id and destination.secret_access_key (or their *_file) "
            "must be set together, or both left empty to use the AWS default chain"
        )
    if key is None:
        if token is not None:
            raise ConfigError(
                "destination.session_token (or session_token_file) is set without "
                "destination.access_key_id and secret_access_key: set all three (temporary "
                "keys) or none (the AWS default chain)"
            )
        return AwsCredentials()
    files = settings.access_key_id_file is not None and settings.access_key_id is None
    source = "destination.*_file" if files else "destination.access_key_id"
    return AwsCredentials(key, secret, token, source)


def _value(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    if value is not None:
        text = value.get_secret_value().strip()
        return SecretStr(text) if text else None
    if path is None:
        return None
    candidates = [path]
    creds = credentials_directory()
    if creds is not None:
        candidates.append(creds / path.name)
    for candidate in candidates:
        found = read_secret_file(candidate, f"destination.{name}_file")
        if found is not None:
            return SecretStr(found) if found else None
    raise ConfigError(
        f"destination.{name}_file {str(path)!r} does not exist (nor in $CREDENTIALS_DIRECTORY)"
    )


def read_secret_file(path: Path, key: str) -> str | None:
    """The stripped text of the secret file `path` (None when it does not exist).

    `ConfigError` (naming `key`) when it is not a regular file, is larger than
    `MAX_SECRET_FILE_BYTES`, is a symlink leading out of its directory, or is unreadable.
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{key} {str(path)!r} cannot be resolved ({exc})") from None
    home = path.parent.resolve()
    if real != path.absolute() and not real.is_relative_to(home):
        raise ConfigError(
            f"{key} {str(path)!r} is a symlink to {str(real)!r}, outside {str(home)!r}: "
            "point the setting at the file itself"
        )
    try:
        data, _ = read_small_file(real, MAX_SECRET_FILE_BYTES, follow_symlinks=False)
    except OSError as exc:
        raise ConfigError(
            f"{key} {str(path)!r} is unreadable ({exc.strerror}): give the archiverd user "
            "read access (mode 0600) or use systemd LoadCredential="
        ) from None
    except FileRefusedError as exc:
        if exc.reason == "too_large":
            raise ConfigError(
                f"{key} {str(path)!r} is {exc}, more than a credential: point the setting at "
                "the right file"
            ) from None
        raise ConfigError(f"{key} {str(path)!r} is not a regular file") from None
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {str(path)!r} is not text") from None
