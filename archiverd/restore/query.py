"""What the user asked for: filters over keys and metadata, and which partitions to list.

Keys say host, day, container id, first/last record time and seq, so most filters need no
request per object. Container names and labels live in object metadata (one HEAD per key),
fetched only when such a filter is used.

A segment matches the time window when it overlaps it: ``first_ts <= until`` and
``last_ts >= since``. Keys are partitioned by the UTC day of the first record, so a segment
that began before ``since`` sits in an earlier partition; ``lookback`` bounds how far back
we look for one (a container that logs slowly can have segments longer than a day).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from archiverd.errors import ConfigError
from archiverd.formats.layout import ParsedKey, day_prefix
from archiverd.restore.timespec import parse_duration, parse_time

DEFAULT_LOOKBACK = timedelta(days=1)
_HEX = re.compile(r"^[0-9a-f]+$")
_LABEL = re.compile(r"^([^=]+)=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """The filters of `ls` / `get`, parsed and validated."""

    container: str = ""
    host: str = ""
    since: datetime | None = None
    until: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    lookback: timedelta = DEFAULT_LOOKBACK

    @classmethod
    def from_options(
        cls,
        *,
        now: datetime,
        container: str | None = None,
        host: str | None = None,
        since: str | None = None,
        until: str | None = None,
        labels: Sequence[str] = (),
        lookback: str | None = None,
    ) -> Query:
        """Parse the command-line strings; raises `ConfigError` naming the bad option."""
        since_at = parse_time(since, now, option="--since") if since else None
        until_at = parse_time(until, now, option="--until") if until else None
        if since_at is not None and until_at is not None and since_at > until_at:
            raise ConfigError(
                f"--since {since_at:%Y-%m-%dT%H:%M:%SZ} is after --until "
                f"{until_at:%Y-%m-%dT%H:%M:%SZ}: swap them"
            )
        if host is not None and ("/" in host or host in (".", "..")):
            raise ConfigError(f"--host {host!r} cannot contain '/': give one host name")
        return cls(
            container=(container or "").strip().lstrip("/"),
            host=host or "",
            since=since_at,
            until=until_at,
            labels=parse_labels(labels),
            lookback=parse_duration(lookback) if lookback else DEFAULT_LOOKBACK,
        )

    @property
    def container_may_be_id(self) -> bool:
        """Whether ``--container`` could be a (prefix of a) container id."""
        return bool(_HEX.match(self.container))

    @property
    def needs_metadata(self) -> bool:
        """Whether matching needs each object's metadata (labels; names are decided later)."""
        return bool(self.labels)

    def key_matches(self, parsed: ParsedKey) -> bool:
        """Host and time window, from the key alone."""
        if self.host and parsed.host != self.host:
            return False
        if self.since is not None and parsed.last_ts < self.since:
            return False
        return not (self.until is not None and parsed.first_ts > self.until)

    def metadata_matches(self, metadata: Mapping[str, str]) -> bool:
        """Labels (every ``k=v`` given must be present with that value)."""
        if not self.labels:
            return True
        present = labels_of(metadata)
        return all(present.get(name) == value for name, value in self.labels.items())

    def name_matches(self, metadata: Mapping[str, str]) -> bool:
        """``--container`` compared with the container name in `metadata`."""
        return container_name(metadata) == self.container


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``["app=web", "tier=db"]`` -> dict; raises `ConfigError` for an item without '='."""
    labels: dict[str, str] = {}
    for item in items:
        match = _LABEL.match(item)
        if match is None:
            raise ConfigError(f"--label {item!r} must be KEY=VALUE, e.g. --label app=web")
        labels[match[1]] = match[2]
    return labels


def labels_of(metadata: Mapping[str, str]) -> dict[str, str]:
    """The container labels recorded in object metadata ({} when absent or malformed)."""
    try:
        value = json.loads(metadata.get("archiverd-labels", "{}"))
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def container_name(metadata: Mapping[str, str]) -> str:
    """The container name as recorded (non-ASCII names were JSON-escaped by layout)."""
    raw = metadata.get("archiverd-container-name", "")
    if "\\" in raw:
        with contextlib.suppress(ValueError):
            raw = str(json.loads(f'"{raw}"'))
    return raw.lstrip("/")


def plan_days(
    since: datetime | None, until: datetime | None, now: datetime, lookback: timedelta
) -> list[datetime] | None:
    """The UTC days whose partitions can hold a matching segment; None means every day.

    Without ``since`` nothing bounds the past, so every partition is listed. Without
    ``until`` the window runs to `now` plus a day (clocks of archiving hosts drift).
    """
    if since is None:
        return None
    first = _midnight(since - lookback)
    last = _midnight(until if until is not None else now + timedelta(days=1))
    days: list[datetime] = []
    day = first
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    return days


def plan_prefixes(prefix: str, hosts: Sequence[str], days: Sequence[datetime] | None) -> list[str]:
    """The key prefixes to list: one per host and day, or one per host for every day."""
    if days is None:
        return [f"{prefix}{host}/" for host in hosts]
    return [day_prefix(prefix, host, day) for host in hosts for day in days]


def _midnight(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)
