"""Object keys are deterministic, day-partitioned and parse back; metadata fits S3's limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiverd.formats.layout import (
    METADATA_LIMIT_BYTES,
    SegmentDescription,
    format_ts,
    object_key,
    parse_key,
    parse_ts,
    segment_metadata,
)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def segment(first: datetime, **changes: object) -> SegmentDescription:
    fields: dict[str, object] = {
        "host": "node-1",
        "container_id": "c0ffee" * 10 + "abcd",
        "seq": 7,
        "first_ts": first,
        "last_ts": first + timedelta(minutes=5),
        "start_offset": 100,
        "end_offset": 200,
        "line_count": 3,
        "plaintext_sha256": "ab" * 32,
    }
    fields.update(changes)
    return SegmentDescription(**fields)  # type: ignore[arg-type]


def test_key_layout_matches_the_contract() -> None:
    """The key is <prefix><host>/<YYYY>/<MM>/<DD>/<id>/<first>_<last>_<seq>.log.gz.enc."""
    first = datetime(2026, 11, 23, 8, 1, 2, 345, tzinfo=UTC)
    key = object_key("prod/", segment(first, container_id="abc"))
    assert key == (
        "prod/node-1/2026/11/23/abc/20261123T080102000345Z_20261123T080602000345Z_00000007"
        ".log.gz.enc"
    )


@given(first=times, seq=st.integers(0, 10**8 - 1))
def test_keys_parse_back(first: datetime, seq: int) -> None:
    """parse_key inverts object_key for any time and sequence number."""
    desc = segment(first, seq=seq)
    parsed = parse_key("p/", object_key("p/", desc))
    assert parsed is not None
    assert (parsed.host, parsed.container_id, parsed.seq) == ("node-1", desc.container_id, seq)
    assert (parsed.first_ts, parsed.last_ts) == (desc.first_ts, desc.last_ts)
    assert parsed.day == f"{first:%Y-%m-%d}"


@given(ts=times)
def test_timestamps_sort_like_times(ts: datetime) -> None:
    """Formatted timestamps round-trip and sort in time order as plain strings."""
    later = ts + timedelta(microseconds=1)
    assert parse_ts(format_ts(ts)) == ts
    assert format_ts(ts) < format_ts(later)


def test_foreign_keys_are_ignored() -> None:
    """Objects that archiverd did not write parse to None instead of raising."""
    assert parse_key("p/", "p/readme.txt") is None
    assert parse_key("p/", "other/h/2026/11/23/c/x_y_1.log.gz.enc") is None
    assert parse_key("p/", "p/h/2026/11/23/c/not-a-segment.log.gz.enc") is None


def test_metadata_drops_largest_labels_to_fit_two_kilobytes() -> None:
    """Labels that would push metadata past 2 KB are dropped, largest first, and flagged."""
    labels = {"small": "x", "huge": "y" * 3000, "medium": "z" * 200}
    first = datetime(2026, 1, 1, tzinfo=UTC)
    meta = segment_metadata(segment(first, labels=labels), {"x-amz-iv": "a" * 16}, "k1")
    assert sum(len(k) + len(v) for k, v in meta.items()) <= METADATA_LIMIT_BYTES
    assert meta["archiverd-labels"] == '{"medium":"' + "z" * 200 + '","small":"x"}'
    assert meta["archiverd-labels-truncated"] == "true"
    assert meta["archiverd-range"] == "100-200"
    assert meta["x-amz-iv"] == "a" * 16


def test_metadata_values_are_ascii() -> None:
    """Non-ASCII container names are escaped, since metadata travels in HTTP headers."""
    first = datetime(2026, 1, 1, tzinfo=UTC)
    meta = segment_metadata(segment(first, container_name="café"), {}, "k1")
    assert meta["archiverd-container-name"] == "caf\\u00e9"
    assert all(value.isascii() for value in meta.values())


def test_parse_ts_whole_seconds_and_bad_dates() -> None:
    """parse_ts takes whole seconds too, and rejects an impossible date with ValueError."""
    assert parse_ts("20261123T084700Z") == datetime(2026, 11, 23, 8, 47, tzinfo=UTC)
    assert parse_ts("20261123T084700000120Z").microsecond == 120
    for bad in ("20261323T084700Z", "2026-11-23T08:47:00Z", "20261123X084700Z"):
        with pytest.raises(ValueError, match=r"month|not a timestamp"):
            parse_ts(bad)


def test_continuity_fields_fit_with_many_losses_and_big_labels() -> None:
    """Labels go first, then losses fold into one summed entry: the chain always fits 2 KB."""
    from archiverd.formats.layout import Loss, losses_of

    first = datetime(2026, 11, 23, 8, 47, tzinfo=UTC)
    losses = tuple(
        Loss(100 + n, first + timedelta(seconds=n), first + timedelta(seconds=n + 1), "r" * 80)
        for n in range(40)
    )
    labels = {f"label-{n}": "v" * 100 for n in range(30)}
    meta = segment_metadata(
        segment(first, labels=labels, lost=losses, stream="s" * 32, prev_seq=6,
                prev_sha256="cd" * 32, end_of_stream=True),
        {"x-amz-3": "w" * 700, "x-amz-m": "m" * 60},  # an RSA-4096 wrapped key
        "k1",
    )  # fmt: skip
    assert sum(len(k) + len(v) for k, v in meta.items()) <= METADATA_LIMIT_BYTES
    assert meta["archiverd-labels"] == "{}"
    assert (meta["archiverd-stream"], meta["archiverd-seq"], meta["archiverd-end"]) == (
        "s" * 32, "7", "true",
    )  # fmt: skip
    assert (meta["archiverd-prev-seq"], meta["archiverd-prev-sha256"]) == ("6", "cd" * 32)
    kept = losses_of(meta)
    assert sum(x.bytes or 0 for x in kept) == sum(x.bytes or 0 for x in losses)
    assert (kept[0].after_ts, kept[-1].before_ts) == (losses[0].after_ts, losses[-1].before_ts)
