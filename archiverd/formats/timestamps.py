"""RFC 3339 times, the one parser for them, and the one conversion between datetimes and ns.

Log records (Docker json-file ``time``, the CRI line's first field) carry RFC 3339 with up to
nanoseconds, e.g. ``2026-11-23T08:55:50.123456789Z``. The sealer reads them for a segment's
first/last time, restore for the time order of ``get --out -``, and ``--since``/``--until``
accept the same grammar (more leniently: a bare date, no seconds, no offset). All three parse
here, so they agree on what a time is:

- ``YYYY-MM-DD``, ``T`` (or ``t`` or a space), ``HH:MM:SS``, an optional fraction of any
  length (read to the nanosecond, further digits dropped), then ``Z``/``z`` or ``±HH:MM``
  (``±HHMM`` too);
- a real calendar date; hour ≤ 23, minute ≤ 59, second ≤ 60 (a leap second is the next
  minute's first second).

Anything else is not a time (None), never an error: records with bad times are kept.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_FRACTION_SCALE: tuple[int, ...] = tuple(10 ** (9 - n) for n in range(10))
"""ns per unit of a fraction with n digits (n ≤ 9)."""

_RFC3339 = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)"
    rb"(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?(?:([Zz])|([+-])(\d\d):?(\d\d))?)?"
)
_Z = 90  # b"Z"
_DOT = 46  # b"."


def _parse(raw: bytes, *, lenient: bool) -> tuple[int, int] | None:
    """(whole seconds since the epoch, ns of fraction) of an RFC 3339 time, or None.

    `lenient` (times people type): the time of day, its seconds and the offset may be left
    out; a missing offset means UTC.
    """
    match = _RFC3339.fullmatch(raw)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if not lenient and (second is None or (zulu is None and sign is None)):
        return None
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:  # no such day (month 13, 31 November, year 0)
        return None
    h, m, s = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or m > 59 or s > 60:
        return None
    seconds = days * 86400 + h * 3600 + m * 60 + s
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        offset = oh * 3600 + om * 60
        seconds -= offset if sign == b"+" else -offset
    frac_ns = 0
    if fraction:
        digits = fraction[:9]
        frac_ns = int(digits) * _FRACTION_SCALE[len(digits)]
    return seconds, frac_ns


def parse_ns(raw: bytes) -> int | None:
    """An RFC 3339 time (see the module docstring) in ns since the epoch; None if not one."""
    parsed = _parse(raw, lenient=False)
    return None if parsed is None else parsed[0] * _NS + parsed[1]


def parse_datetime(raw: bytes | str, *, lenient: bool = False) -> datetime | None:
    """An RFC 3339 time as an aware UTC datetime (to the microsecond); None if not one.

    `lenient` also takes a bare date, a time without seconds, and no offset (UTC).
    """
    data = raw.encode("ascii", "replace") if isinstance(raw, str) else raw
    parsed = _parse(data, lenient=lenient)
    if parsed is None:
        return None
    try:
        return from_ns(parsed[0] * _NS + parsed[1])
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59, past datetime.max
        return None


def to_ns(moment: datetime) -> int:
    """An aware datetime in ns since the epoch (exact: integer arithmetic, no float)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def from_ns(ns: int) -> datetime:
    """ns since the epoch as an aware UTC datetime, truncated to the microsecond."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


class TimeCache:
    """`parse_ns` for one stream's records, remembering the last UTC second it parsed.

    Records come many per second, so most times differ from the one before only in their
    fraction: those are read with two byte comparisons and one ``int``. Owned by one reader
    (a scanner, one restore stream); not shared between threads.
    """

    __slots__ = ("second", "second_ns")

    def __init__(self) -> None:
        self.second = b"~"
        """``YYYY-MM-DDTHH:MM:SS.`` of the last UTC second parsed ("~" matches no time)."""
        self.second_ns = 0
        """That second in ns since the epoch."""

    def span(self, buf: bytes, start: int, stop: int) -> int | None:
        """The time in ``buf[start:stop]`` in ns since the epoch; None if not a time."""
        if buf.startswith(self.second, start) and buf[stop - 1] == _Z:
            size = stop - start
            if 21 < size <= 30:
                fraction = buf[start + 20 : stop - 1]
                if fraction.isdigit():
                    return self.second_ns + int(fraction) * _FRACTION_SCALE[size - 21]
        value = buf[start:stop]
        parsed = _parse(value, lenient=False)
        if parsed is None:
            return None
        seconds, frac_ns = parsed
        if value[-1] == _Z and value[19] == _DOT:  # a UTC time: remember its second
            self.second, self.second_ns = value[:20], seconds * _NS
        return seconds * _NS + frac_ns

    def parse(self, raw: bytes) -> int | None:
        """`parse_ns` of `raw`, through the cache."""
        return self.span(raw, 0, len(raw))
