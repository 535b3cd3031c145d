"""Pure parts of the restore query: time parsing, partition planning, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiverd.errors import ConfigError
from archiverd.formats.layout import ParsedKey, SegmentDescription, object_key, parse_key
from archiverd.restore.query import (
    Query,
    container_name,
    labels_of,
    parse_labels,
    plan_days,
    plan_prefixes,
)
from archiverd.restore.timespec import parse_duration, parse_time

NOW = datetime(2026, 11, 23, 9, 30, 15, tzinfo=UTC)
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)


def test_relative_times_count_back_from_now() -> None:
    """2h, 30m, 7d, 1h30m and 90s are durations before the injected now, to the second."""
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_time("7d", NOW) == NOW - timedelta(days=7)
    assert parse_time("1h30m", NOW) == NOW - timedelta(minutes=90)
    assert parse_time("90s", NOW) == NOW - timedelta(seconds=90)
    assert parse_duration("1w") == timedelta(days=7)


def test_rfc3339_forms_become_utc() -> None:
    """Z, offsets, a space separator, a bare date and no offset (UTC) are all accepted."""
    assert parse_time("2026-11-23T08:00:01Z", NOW) == datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)
    assert parse_time("2026-11-23T09:00:01+01:00", NOW) == datetime(
        2026, 11, 23, 8, 0, 1, tzinfo=UTC
    )
    assert parse_time("2026-11-23 08:00:01", NOW) == datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)
    assert parse_time("2026-11-23", NOW) == datetime(2026, 11, 23, tzinfo=UTC)
    assert parse_time("2026-11-23T08:00:01.250Z", NOW).microsecond == 250000


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "2026-13-01", "5x", ""])
def test_bad_times_name_the_option_and_the_forms(text: str) -> None:
    """An unparseable time is a ConfigError naming the option and showing accepted forms."""
    with pytest.raises(ConfigError, match=r"--until .* RFC 3339"):
        parse_time(text, NOW, option="--until")


def test_since_after_until_is_rejected() -> None:
    """--since later than --until is a ConfigError that says to swap them."""
    with pytest.raises(ConfigError, match="swap them"):
        Query.from_options(now=NOW, since="1h", until="2h")


def test_labels_parse_and_reject_missing_equals() -> None:
    """k=v pairs (values may contain '=') parse; an item without '=' is a ConfigError."""
    assert parse_labels(["app=web", "expr=a=b"]) == {"app": "web", "expr": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_labels(["app"])


def test_metadata_helpers_decode_names_and_labels() -> None:
    """Names lose docker's leading '/', escaped non-ASCII names decode, bad labels are {}."""
    assert container_name({"archiverd-container-name": "/web"}) == "web"
    assert container_name({"archiverd-container-name": "caf\\u00e9"}) == "café"
    assert labels_of({"archiverd-labels": '{"a":"1"}'}) == {"a": "1"}
    assert labels_of({"archiverd-labels": "not json"}) == {}
    assert labels_of({}) == {}


def test_no_since_lists_every_partition() -> None:
    """Without --since nothing bounds the past: one prefix per host, every day."""
    assert plan_days(None, NOW, NOW, timedelta(days=1)) is None
    assert plan_prefixes("p/", ["h1", "h2"], None) == ["p/h1/", "p/h2/"]


def test_partitions_cover_lookback_through_until() -> None:
    """Days run from the day of since-lookback through the day of until, inclusive."""
    since = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    until = datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC)
    days = plan_days(since, until, NOW, timedelta(days=1))
    assert days is not None
    assert [d.day for d in days] == [19, 20, 21, 22]
    assert plan_prefixes("p/", ["h"], days[:1]) == ["p/h/2026/11/19/"]


def _segment(first: datetime, last: datetime, host: str = "h") -> SegmentDescription:
    return SegmentDescription(
        host=host,
        container_id="ab" * 32,
        seq=1,
        first_ts=first,
        last_ts=last,
        start_offset=0,
        end_offset=1,
        line_count=1,
        plaintext_sha256="0" * 64,
    )


@given(
    first=moments, span=st.integers(0, 86400 * 2), since=moments, width=st.integers(0, 86400 * 5)
)
def test_partition_plan_never_misses_an_overlapping_segment(
    first: datetime, span: int, since: datetime, width: int
) -> None:
    """Any segment (up to the lookback long) overlapping [since, until] sits in a planned prefix."""
    last = first + timedelta(seconds=span)
    until = since + timedelta(seconds=width)
    lookback = timedelta(days=2)
    query = Query(since=since, until=until, lookback=lookback)
    key = object_key("p/", _segment(first, last))
    parsed = parse_key("p/", key)
    assert parsed is not None
    if query.key_matches(parsed):
        days = plan_days(since, until, NOW, lookback)
        assert days is not None
        assert any(key.startswith(p) for p in plan_prefixes("p/", ["h"], days))


@given(first=moments, span=st.integers(0, 86400), since=moments, width=st.integers(0, 86400))
def test_time_filter_is_exact_overlap(
    first: datetime, span: int, since: datetime, width: int
) -> None:
    """key_matches is exactly: first_ts <= until and last_ts >= since."""
    last = first + timedelta(seconds=span)
    until = since + timedelta(seconds=width)
    parsed = ParsedKey(host="h", day="", container_id="c", first_ts=first, last_ts=last, seq=0)
    assert Query(since=since, until=until).key_matches(parsed) == (first <= until and last >= since)


def test_host_filter_and_container_id_detection() -> None:
    """--host compares exactly; a hex --container may be an id prefix, other text is a name."""
    parsed = ParsedKey(host="h1", day="", container_id="c", first_ts=NOW, last_ts=NOW, seq=0)
    assert Query(host="h1").key_matches(parsed)
    assert not Query(host="h2").key_matches(parsed)
    assert Query.from_options(now=NOW, container="0a1b").container_may_be_id
    assert not Query.from_options(now=NOW, container="/web-1").container_may_be_id
    assert Query.from_options(now=NOW, container="/web-1").container == "web-1"
    with pytest.raises(ConfigError, match="cannot contain '/'"):
        Query.from_options(now=NOW, host="a/b")


def test_label_filter_needs_every_pair() -> None:
    """Every --label k=v given must be present with that exact value."""
    query = Query(labels={"app": "web", "tier": "front"})
    assert query.needs_metadata
    assert query.metadata_matches({"archiverd-labels": '{"app":"web","tier":"front","x":"1"}'})
    assert not query.metadata_matches({"archiverd-labels": '{"app":"web"}'})
    assert not query.metadata_matches({"archiverd-labels": '{"app":"web","tier":"back"}'})
