"""The one RFC 3339 parser: what is a time, the per-stream cache, datetimes <-> ns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiverd.formats.timestamps import TimeCache, from_ns, parse_datetime, parse_ns, to_ns

BASE = 1_795_420_800 * 10**9  # 2026-11-23T08:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"2026-11-23T08:00:00Z", BASE),
        (b"2026-11-23t08:00:00.5z", BASE + 500_000_000),
        (b"2026-11-23 08:00:00.000000001Z", BASE + 1),
        (b"2026-11-23T08:00:00.1234567891234Z", BASE + 123_456_789),
        (b"2026-11-23T09:30:00+01:30", BASE),
        (b"2026-11-23T07:00:00-0100", BASE),
        (b"2026-11-23T07:59:60Z", BASE),
        (b"2024-02-29T00:00:00Z", 1_709_164_800 * 10**9),
        (b"2026-02-29T00:00:00Z", None),
        (b"2026-11-31T08:00:00Z", None),
        (b"2026-13-01T08:00:00Z", None),
        (b"2026-11-23T24:00:00Z", None),
        (b"2026-11-23T08:00:00", None),
        (b"2026-11-23T08:00Z", None),
        (b"2026-11-23T08:00:00.Z", None),
        (b"2026-11-23T08:00:00Z\n", None),
        (b"2026-11-23", None),
        (b"", None),
    ],
)
def test_what_is_a_record_time(text: bytes, expected: int | None) -> None:
    """Record times: RFC 3339 with an offset and seconds, a real calendar date; else None."""
    assert parse_ns(text) == expected
    assert TimeCache().parse(text) == expected


def test_typed_times_may_leave_out_seconds_offset_and_time() -> None:
    """--since/--until: a bare date, no seconds or no offset (UTC) are read too."""
    assert parse_datetime("2026-11-23", lenient=True) == datetime(2026, 11, 23, tzinfo=UTC)
    assert parse_datetime("2026-11-23T08:00", lenient=True) == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert parse_datetime("2026-11-23 08:00:00", lenient=True) == from_ns(BASE)
    assert parse_datetime("2026-11-23 08:00:00") is None


_STAMP = st.builds(
    "2026-11-2{}T08:00:0{}{}{}".format,
    st.sampled_from("3489"),
    st.integers(0, 9),
    st.sampled_from(["", ".", ".5", ".000000001", ".123456789", ".1234567891", ".12a"]),
    st.sampled_from(["Z", "z", "+01:00", "", "ZZ"]),
).map(str.encode)


@given(st.lists(_STAMP, max_size=30))
def test_cache_reads_every_sequence_as_the_parser_does(stamps: list[bytes]) -> None:
    """The per-stream cache of the last second never changes an answer, in any order."""
    cache = TimeCache()
    assert [cache.parse(s) for s in stamps] == [parse_ns(s) for s in stamps]


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_datetimes_and_ns_convert_exactly(moment: datetime) -> None:
    """to_ns is exact integer arithmetic; from_ns inverts it; RFC 3339 text agrees."""
    ns = to_ns(moment)
    assert ns == ((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)) * 1000
    assert from_ns(ns) == moment
    assert from_ns(ns + 999) == moment
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    assert parse_ns(text) == ns
