"""Settings: one validated `Settings` object, built once at the entry point and passed in.

Precedence, highest first: values passed to `load_settings`, environment variables
``ARCHIVERD_<SECTION>__<KEY>``, the TOML file, the embedded defaults. The embedded defaults
archive a demo source to ``file://<state.dir>/bucket`` so a first run works with no file.
Every validation error becomes a `ConfigError` naming the key, the bad value and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from archiverd.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/archiverd/archiverd.toml")
DEFAULT_STATE_DIR = Path("/var/lib/archiverd")
DEFAULT_KEY_FILE = Path("/etc/archiverd/archive.key")
# Chosen by bench/pack.py (256 MiB Docker json-file log, one core): level 1 packs as fast as
# level 0 (~400-480 MB/s with AES-GCM) at ratio 5.5x vs 4.2x; level 2 gains nothing and
# level 3 is 2-5x slower for +1%. gzip -6 reaches 6.1x at ~60 MB/s.
DEFAULT_COMPRESSION_LEVEL = 1
# Added to the archive-lag bound for the derived /readyz limit: time for the pass itself.
ARCHIVE_LAG_GRACE_SECONDS = 900

_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$")
_UPLOAD_AT = re.compile(r"^(\*|[01]?\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class UploadTime:
    """One ``schedule.upload_at`` entry: minute `minute` of hour `hour` (None: every hour)."""

    hour: int | None
    minute: int


def parse_upload_at(value: str) -> tuple[UploadTime, ...]:
    """The one parser of ``schedule.upload_at``; `ValueError` names the bad entries."""
    parts = [part.strip() for part in value.split(",")]
    bad = [part for part in parts if not _UPLOAD_AT.match(part)]
    if not parts or bad:
        raise ValueError(f"bad time(s) {bad}: use comma-separated HH:MM or *:MM, e.g. '*:00,*:30'")
    times = (part.partition(":") for part in parts)
    return tuple(
        UploadTime(None if hour == "*" else int(hour), int(minute)) for hour, _, minute in times
    )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSettings(_Section):
    """One place to discover logs in."""

    kind: Literal["docker", "cri", "directory", "demo"]
    path: Path
    glob: str = "**/*.log"
    """`directory` only: which files under `path` are logs (pathlib glob)."""
    idle_seconds: float = Field(default=300.0, gt=0)
    """`cri`/`directory` with `run --once`: a file idle this long counts as finished."""
    rescan_seconds: float = Field(default=30.0, gt=0)
    """Periodic rescan, a safety net for missed inotify events."""
    delete_after_upload: bool = False
    """`directory` only: delete a file once it has been rotated away (it is no longer the
    file being written) and every byte of it is uploaded and journaled with its VersionId."""
    delete_dry_run: bool = False
    """With `delete_after_upload`: only log what would be deleted."""

    @model_validator(mode="after")
    def _delete_needs_directory(self) -> SourceSettings:
        if (self.delete_after_upload or self.delete_dry_run) and self.kind != "directory":
            raise ValueError(
                "delete_after_upload / delete_dry_run apply to kind = 'directory' sources only "
                "(docker and kubelet manage their own log files)"
            )
        return self


class DestinationSettings(_Section):
    """Where packed objects go: ``s3://bucket/prefix/`` or ``file:///dir``."""

    url: str = ""
    """Empty means ``file://<state.dir>/bucket`` (the embedded default)."""
    endpoint_url: str = ""
    region: str = "us-east-1"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    require_versioning: bool = True
    sse_kms_key_id: str = ""
    storage_class: str = ""
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    session_token: SecretStr | None = None
    """With temporary keys (STS): their session token. Explicit keys (these three, or their
    ``*_file``) win over the AWS default chain, for S3 and for KMS alike."""
    session_token_file: Path | None = None
    acl: Literal[
        "",
        "private",
        "bucket-owner-full-control",
        "bucket-owner-read",
        "authenticated-read",
        "aws-exec-read",
    ] = ""
    """A canned ACL sent on every PUT and multipart create (cross-account buckets often
    require ``bucket-owner-full-control``); empty sends none."""
    multipart_threshold_bytes: int = Field(default=64 * 1024 * 1024, ge=5 * 1024 * 1024)
    part_size_bytes: int = Field(default=16 * 1024 * 1024, ge=8 * 1024 * 1024)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    """Attempts per segment upload (retryable failures only), with exponential backoff."""
    backoff_initial_seconds: float = Field(default=1.0, gt=0)
    """The first retry waits between half of this and all of it; each next one doubles."""
    backoff_max_seconds: float = Field(default=120.0, gt=0)
    """No wait between attempts is longer than this."""
    object_lock_mode: Literal["", "GOVERNANCE", "COMPLIANCE"] = ""
    """Retention on every PUT (S3 Object Lock); the bucket must have Object Lock enabled."""
    object_lock_days: int = Field(default=0, ge=0, le=36500)
    """With `object_lock_mode`: days each object version is retained from its upload."""

    @model_validator(mode="after")
    def _lock_needs(self) -> DestinationSettings:
        if self.object_lock_mode and self.object_lock_days < 1:
            raise ValueError(
                "destination.object_lock_mode needs destination.object_lock_days >= 1 "
                "(how long each object version is retained)"
            )
        if self.object_lock_days and not self.object_lock_mode:
            raise ValueError(
                "destination.object_lock_days needs destination.object_lock_mode "
                "(GOVERNANCE or COMPLIANCE)"
            )
        return self

    retry_timeout_seconds: float = Field(default=600.0, gt=0)
    """No segment is retried for longer than this (whatever attempts remain); the pass stops
    and the segment waits in the spool for the next one."""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value:
            return value
        parsed = urlparse(value)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("an s3:// URL needs a bucket, e.g. s3://my-log-archive/prod/")
            return value
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(
                    f"file://{parsed.netloc}{parsed.path} names host {parsed.netloc!r}, not a "
                    "directory: a file:// URL needs an absolute path after three slashes, "
                    f"e.g. file:///srv/{parsed.netloc}{parsed.path}"
                )
            if not parsed.path.startswith("/"):
                raise ValueError("a file:// URL needs an absolute path, e.g. file:///srv/archive")
            return value
        raise ValueError("use s3://bucket/prefix/ or file:///absolute/dir")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("use http://host:port or https://host (or leave empty for AWS)")
        return value


class EncryptionSettings(_Section):
    """How data keys are wrapped. The master key itself never appears in settings."""

    key_file: Path = DEFAULT_KEY_FILE
    """Raw 256-bit master key (base64), mode 0600; also looked up in $CREDENTIALS_DIRECTORY."""
    wrap: Literal["aes-gcm", "kms", "rsa-oaep"] = "aes-gcm"
    kms_key_id: str = ""
    kms_region: str = ""
    """`kms`: the KMS region (empty: the AWS default chain, e.g. AWS_REGION)."""
    kms_endpoint_url: str = ""
    """`kms`: a KMS-compatible endpoint (tests, VPC endpoints); empty for AWS."""
    public_key_file: Path | None = None
    """`rsa-oaep`: the PEM public key; the host can archive but not read back."""
    decrypt_key_files: tuple[Path, ...] = ()
    """Older raw keys, tried by key id when reading archives after a rotation."""
    compression_level: int = Field(default=DEFAULT_COMPRESSION_LEVEL, ge=0, le=3)
    """ISA-L level 0-3 (gzip-compatible output)."""

    @model_validator(mode="after")
    def _wrap_needs(self) -> EncryptionSettings:
        if self.wrap == "kms" and not self.kms_key_id:
            raise ValueError("encryption.wrap = 'kms' needs encryption.kms_key_id (a KMS key ARN)")
        if self.wrap == "rsa-oaep" and self.public_key_file is None:
            raise ValueError("encryption.wrap = 'rsa-oaep' needs encryption.public_key_file")
        return self


class RotationSettings(_Section):
    """When a segment is sealed."""

    max_segment_bytes: int = Field(default=500_000_000, ge=1024)
    max_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_segment_age_seconds: int = Field(default=1500, ge=0)
    """At each upload, an open segment whose first record is older than this is sealed at
    its last record boundary; 0 turns it off. 1500 s with the default schedule (every 30 min,
    splay 300 s) bounds the archive lag at 1500 + 1800 + 300 = 3600 s."""


class ScheduleSettings(_Section):
    """When uploads run."""

    upload_at: str = "*:00,*:30"
    splay_seconds: int = Field(default=300, ge=0, le=3600)
    upload_on_shutdown: bool = True
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    overdue_after_seconds: int = Field(default=2 * 3600, ge=60)
    """/readyz fails when pending data is older than this and uploads are failing."""
    max_backlog_bytes_per_second: int = Field(default=0, ge=0)
    """Drain rate after an outage; 0 means unlimited."""
    max_archive_lag_seconds: int = Field(default=0, ge=0)
    """/readyz fails when the oldest byte not yet in the bucket is older than this; 0 means
    derived: the lag bound (max_segment_age + longest upload interval + splay) plus
    `ARCHIVE_LAG_GRACE_SECONDS`, or no check when max_segment_age_seconds is 0."""

    @field_validator("upload_at")
    @classmethod
    def _times(cls, value: str) -> str:
        parse_upload_at(value)
        return ",".join(part.strip() for part in value.split(","))

    @property
    def upload_times(self) -> tuple[UploadTime, ...]:
        """`upload_at` as times (validated when the settings were built)."""
        return parse_upload_at(self.upload_at)


class StateSettings(_Section):
    """Where the journal and spool live."""

    dir: Path = DEFAULT_STATE_DIR
    spool_max_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)

    @field_validator("dir", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> object:
        # Before Path(): Path("") is "." and would put the state in the working directory.
        if isinstance(value, str | Path) and not str(value).startswith("/"):
            raise ValueError(
                "use an absolute path, e.g. /var/lib/archiverd (empty or relative would put "
                "the journal and spool in whatever the working directory is)"
            )
        return value


class HttpSettings(_Section):
    """The read-only HTTP endpoints."""

    listen: str = "127.0.0.1:9464"
    """host:port; empty disables HTTP. Loopback by default."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("use host:port, e.g. 127.0.0.1:9464")
        return value


class LogSettings(_Section):
    """archiverd's own logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ArchiveSettings(_Section):
    """An older bucket `ls`/`get`/`verify` also read (after a switch to a fresh bucket).

    Credentials and timeouts are the destination's; endpoint and region are its own.
    """

    url: str
    endpoint_url: str = ""
    region: str = "us-east-1"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlparse(value).scheme not in ("s3", "file"):
            raise ValueError("use s3://bucket/prefix/ or file:///absolute/dir")
        return DestinationSettings._url_scheme(value)


class RestoreSettings(_Section):
    """What `ls`, `get` and `verify` read besides the destination."""

    archives: tuple[ArchiveSettings, ...] = ()
    """Older buckets, read after the destination; a segment found twice is shown once."""


def _default_sources() -> tuple[SourceSettings, ...]:
    return ()


class Settings(BaseSettings):
    """Everything archiverd is configured with, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="ARCHIVERD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    host: str = ""
    """The host name in object keys; empty means this machine's name. Set it from the node
    name in a Kubernetes DaemonSet so keys survive pod replacement."""
    worker_processes: int | None = Field(default=None, ge=0, le=64)
    """Processes that scan backlogs and pack segments (0: all of it on the daemon's own
    threads). Unset: none where the record scanner is compiled (the usual install: threads
    do better there, bench/daemon.py), else one per core, at most 8, none on one core."""
    sources: tuple[SourceSettings, ...] = Field(default_factory=_default_sources)
    """Empty means one `demo` source under <state.dir>/demo (the embedded default)."""
    destination: DestinationSettings = DestinationSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    rotation: RotationSettings = RotationSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    state: StateSettings = StateSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    restore: RestoreSettings = RestoreSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value and not _HOST.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it is a key segment)")
        return value

    @property
    def host_name(self) -> str:
        """The host segment of object keys."""
        return self.host or socket.gethostname()

    @property
    def destination_url(self) -> str:
        """The destination URL, with the embedded default filled in."""
        return self.destination.url or (self.state.dir / "bucket").resolve().as_uri()

    @property
    def effective_sources(self) -> tuple[SourceSettings, ...]:
        """The configured sources, or the embedded demo source."""
        if self.sources:
            return self.sources
        return (SourceSettings(kind="demo", path=self.state.dir / "demo"),)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings, or raise `ConfigError` saying what to fix.

    `config_file` None means the default path if it exists, else the embedded defaults.
    An explicitly named file that does not exist is an error.
    """
    path = config_file
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None and not path.is_file():
        if path.exists():
            kind = "directory" if path.is_dir() else "special file"
            raise ConfigError(
                f"config file {str(path)!r} is a {kind}, not a file: pass the TOML file as --config"
            )
        raise ConfigError(f"config file {str(path)!r} does not exist: pass an existing --config")
    _check_environment(os.environ)
    try:
        loaded = _reading(path)(**overrides) if path is not None else Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except (ValueError, OSError) as exc:  # TOML syntax errors, unreadable file
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    # The validated values, as a plain `Settings` (not the per-file subclass).
    return Settings.model_construct(loaded.model_fields_set, **dict(loaded))


def _reading(path: Path) -> type[Settings]:
    """`Settings` that also reads the TOML file `path` (pydantic-settings takes the file from
    the class's config, so each file gets its own subclass rather than a module global)."""
    config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})
    return type("Settings", (Settings,), {"model_config": config, "__module__": __name__})


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``ARCHIVERD_<SECTION>__<KEY>`` variables naming no setting: pydantic-settings
    would silently ignore a misspelled one. Names without ``__`` are left alone (the demo
    source and tests use a few)."""
    bad = []
    for name in sorted(environ):
        if not name.startswith("ARCHIVERD_") or "__" not in name:
            continue
        section, _, key = name.removeprefix("ARCHIVERD_").lower().partition("__")
        field = Settings.model_fields.get(section)
        if field is None:
            hint = _closest(section, Settings.model_fields)
            bad.append(f"  {name}: there is no section {section!r}{hint}")
            continue
        model = field.annotation
        first = key.split("__", 1)[0]
        is_section = isinstance(model, type) and issubclass(model, BaseModel)
        if is_section and first not in model.model_fields:  # type: ignore[union-attr]
            hint = _closest(first, model.model_fields)  # type: ignore[union-attr]
            bad.append(f"  {name}: {section} has no key {first!r}{hint}")
    if bad:
        raise ConfigError(
            "invalid environment:\n"
            + "\n".join(bad)
            + "\n  fix the name (ARCHIVERD_<SECTION>__<KEY>, keys as in config/archiverd.toml)"
            " or unset it"
        )


def _closest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _describe(exc: ValidationError, path: Path | None) -> str:
    origin = f" in {path}" if path else ""
    lines = [f"invalid configuration{origin}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        env = "ARCHIVERD_" + "__".join(
            str(part).upper() for part in error["loc"] if not isinstance(part, int)
        )
        value = error.get("input")
        shown = "<hidden>" if _is_secret(key) else repr(value)
        if error["type"] == "extra_forbidden":
            hint = "unknown key: remove it or check its spelling against config/archiverd.toml"
        elif error["type"] == "missing":
            hint = "required: set it in the file or with " + env
        else:
            hint = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {key} = {shown}: {hint} (file key {key!r} or env {env})")
    return "\n".join(lines)


def _is_secret(key: str) -> bool:
    return any(word in key for word in ("secret", "access_key", "password", "token"))
