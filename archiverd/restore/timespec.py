"""Parse the times users type for ``--since`` / ``--until`` / ``--lookback``.

Accepted: RFC 3339 as `archiverd.formats.timestamps` reads it (``2026-11-23T08:00:00Z``,
``2026-11-23 08:00:00+01:00``; no offset means UTC, seconds may be left out), a bare date
(``2026-11-23``, midnight UTC), or a duration before now (``90s``, ``30m``,
``2h``, ``7d``, ``1w``, combinations such as ``1h30m``). All results are aware UTC datetimes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from archiverd.errors import ConfigError
from archiverd.formats.timestamps import parse_datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``1h30m`` -> 90 minutes. Raises `ConfigError` naming the accepted forms."""
    compact = text.strip().lower()
    if not _DURATION.match(compact):
        raise ConfigError(
            f"{text!r} is not a duration: use a number and a unit s/m/h/d/w, e.g. 30m, 2h, 7d"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime, *, option: str = "--since") -> datetime:
    """A point in time in UTC: RFC 3339, a date, or a duration before `now`."""
    stripped = text.strip()
    if _DURATION.match(stripped.lower()):
        return (now - parse_duration(stripped)).astimezone(UTC)
    parsed = parse_datetime(stripped, lenient=True)
    if parsed is None:
        raise ConfigError(
            f"{option} {text!r} is not a time: use RFC 3339 (2026-11-23T08:00:00Z), "
            "a date (2026-11-23) or a duration before now (30m, 2h, 7d)"
        )
    return parsed
