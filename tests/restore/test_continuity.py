"""The continuity check alone (pure): every way a chain can break, found from metadata."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from archiverd.formats.layout import (
    Loss,
    SegmentDescription,
    object_key,
    parse_key,
    segment_metadata,
)
from archiverd.restore.continuity import check_streams
from archiverd.restore.listing import Segment

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
CID = "ab" * 32


def chain(n: int, *, ended: bool = True) -> list[Segment]:
    """`n` chained segments of one stream, 100 bytes each, as listed with metadata."""
    out: list[Segment] = []
    prev: SegmentDescription | None = None
    for seq in range(n):
        sha = hashlib.sha256(b"%d" % seq).hexdigest()
        desc = SegmentDescription(
            host="h", container_id=CID, seq=seq, first_ts=T0 + timedelta(minutes=seq),
            last_ts=T0 + timedelta(minutes=seq, seconds=30), start_offset=100 * seq,
            end_offset=100 * (seq + 1), line_count=1, plaintext_sha256=sha,
            container_name="app", stream="s" * 32,
            prev_seq=None if prev is None else prev.seq,
            prev_sha256="" if prev is None else prev.plaintext_sha256,
            end_of_stream=ended and seq == n - 1,
        )  # fmt: skip
        out.append(listed(desc))
        prev = desc
    return out


def listed(desc: SegmentDescription) -> Segment:
    key = object_key("", desc)
    parsed = parse_key("", key)
    assert parsed is not None
    meta = segment_metadata(desc, {}, "k")
    return Segment(key, parsed, "v1", 10, T0, metadata=meta)


def kinds(segments: list[Segment], **options: bool) -> list[tuple[str, str]]:
    [report] = check_streams(segments, bounded_start=options.get("since", False),
                             bounded_end=options.get("until", False))  # fmt: skip
    return [(f.kind, f.message.split(": ", 1)[1]) for f in report.findings]


def test_a_complete_chain_has_no_findings() -> None:
    """Seq 0..n-1, links and offsets meeting, end mark on the last: nothing to say."""
    assert kinds(chain(5)) == []


@given(st.integers(min_value=3, max_value=30), st.data())
def test_any_missing_middle_segment_is_exactly_one_gap(n: int, data: st.DataObject) -> None:
    """Remove any one segment but the last: one gap naming its seq and the time around it."""
    segments = chain(n)
    gone = data.draw(st.integers(min_value=0, max_value=n - 2))
    found = kinds(segments[:gone] + segments[gone + 1 :])
    if gone == 0:
        assert found == [
            ("gap", "seq 0 (and any before it) missing from the bucket: no records between the "
                    "start of the stream and 2026-11-01T08:01:00Z"),
        ]  # fmt: skip
    else:
        after = T0 + timedelta(minutes=gone - 1, seconds=30)
        before = T0 + timedelta(minutes=gone + 1)
        assert found == [
            ("gap", f"seq {gone} missing from the bucket: no records between "
                    f"{after:%Y-%m-%dT%H:%M:%SZ} and {before:%Y-%m-%dT%H:%M:%SZ}"),
        ]  # fmt: skip


def test_a_window_need_not_start_or_end_with_the_stream() -> None:
    """--since: no predecessor required; --until: no end mark required."""
    segments = chain(6)[2:4]
    assert kinds(segments, since=True, until=True) == []
    assert [k for k, _ in kinds(segments, since=True)] == ["open"]
    assert [k for k, _ in kinds(segments, until=True)] == ["gap"]


def test_offsets_that_do_not_meet_break_the_chain_unless_a_loss_explains_them() -> None:
    """A start offset off by 50 is broken; a recorded loss of 50 bytes (or unknown) is not."""
    segments = chain(3)
    desc = _desc(segments[2])
    shifted = replace(desc, start_offset=desc.start_offset + 50)
    assert kinds([*segments[:2], listed(shifted)]) == [
        ("broken", "seq 2 starts at byte 250 but seq 1 ends at byte 200"),
    ]
    loss = Loss(50, T0, T0 + timedelta(seconds=1), "rotated")
    found = kinds([*segments[:2], listed(replace(shifted, lost=(loss,)))])
    assert found == [("lost", "lost at source: 50 bytes between 2026-11-01T08:00:00Z and "
                              "2026-11-01T08:00:01Z (rotated)")]  # fmt: skip
    unknown = replace(loss, bytes=None)
    found = kinds([*segments[:2], listed(replace(shifted, lost=(unknown,)))])
    assert [k for k, _ in found] == ["lost"]


def test_an_object_copied_under_another_seq_key_is_broken() -> None:
    """Metadata saying seq 1 under the key of seq 2: broken, whatever else holds."""
    segments = chain(3)
    wrong = replace(segments[2], metadata={**(segments[2].metadata or {}), "archiverd-seq": "1"})
    assert ("broken", f"the object at {segments[2].key} (seq 2) says it is seq 1: it was "
                      "copied from another key") in kinds([*segments[:2], wrong])  # fmt: skip


def test_a_segment_after_the_end_mark_is_broken() -> None:
    """Nothing may follow a segment that says the stream ended."""
    segments = chain(3)
    early_end = listed(replace(_desc(segments[1]), end_of_stream=True))
    assert ("broken", "seq 2 follows seq 1, which says the stream ended there") in kinds(
        [segments[0], early_end, segments[2]]
    )


def _desc(segment: Segment) -> SegmentDescription:
    meta = segment.metadata or {}
    start, end = (int(x) for x in meta["archiverd-range"].split("-"))
    prev = meta["archiverd-prev-seq"]
    return SegmentDescription(
        host="h", container_id=CID, seq=segment.parsed.seq, first_ts=segment.parsed.first_ts,
        last_ts=segment.parsed.last_ts, start_offset=start, end_offset=end, line_count=1,
        plaintext_sha256=meta["archiverd-plaintext-sha256"], container_name="app",
        stream=meta["archiverd-stream"], prev_seq=None if prev == "none" else int(prev),
        prev_sha256=meta["archiverd-prev-sha256"], end_of_stream=meta["archiverd-end"] == "true",
    )  # fmt: skip
