"""Record parsing for --grep / --text and the time-ordered merge of `get --out -`."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from archiverd.formats.timestamps import parse_ns as parse_ts_ns
from archiverd.restore.records import (
    Message,
    iter_messages,
    merge,
    stream_messages,
    write_messages,
)


def keyed(records: list[bytes]) -> list[tuple[int, Message]]:
    """Messages keyed by their own time (0 when undated), as write_messages takes them."""
    return [(m.ts_ns or 0, m) for m in iter_messages(records)]


def tagged(records: list[bytes], order: int) -> Iterator[tuple[int, int, Message]]:
    """Messages as merge takes them: (own time, stream order, message)."""
    return ((m.ts_ns or 0, order, m) for m in iter_messages(records))


def docker(log: str, ts: str, stream: str = "stdout") -> bytes:
    """A Docker json-file record as dockerd writes it."""
    return (json.dumps({"log": log, "stream": stream, "time": ts}) + "\n").encode()


def test_timestamps_parse_to_nanoseconds() -> None:
    """RFC 3339 with nanoseconds and offsets becomes ns since the epoch; junk is None."""
    base = int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()) * 10**9
    assert parse_ts_ns(b"2026-11-23T08:00:00.000000123Z") == base + 123
    assert parse_ts_ns(b"2026-11-23T09:00:00.5+01:00") == base + 500_000_000
    assert parse_ts_ns(b"2026-11-23T08:00:00Z") == base
    assert parse_ts_ns(b"hello") is None
    assert parse_ts_ns(b"2026-13-45T08:00:00Z") is None


def test_docker_partial_records_join_into_one_message() -> None:
    """Docker's 16 KiB pieces form one message: text joined, raw bytes kept record by record."""
    parts = [docker("a" * 5, "2026-11-23T08:00:00Z"), docker("b\n", "2026-11-23T08:00:00.1Z")]
    messages = list(iter_messages([*parts, docker("next\n", "2026-11-23T08:00:01Z")]))
    assert [m.text for m in messages] == [b"aaaaab\n", b"next\n"]
    assert messages[0].raw == b"".join(parts)
    assert messages[0].ts_ns == parse_ts_ns(b"2026-11-23T08:00:00Z")


def test_cri_partial_lines_join_and_plain_lines_pass_through() -> None:
    """CRI P pieces join up to the F line; an empty F message is a newline; other lines as is."""
    lines = [
        b"2026-11-23T08:00:00.1Z stdout P hel\n",
        b"2026-11-23T08:00:00.2Z stdout F lo\n",
        b"2026-11-23T08:00:00.3Z stderr F\n",
        b"plain text line\n",
        b"no newline at end",
    ]
    messages = list(iter_messages(lines))
    assert [m.text for m in messages] == [
        b"hello\n",
        b"\n",
        b"plain text line\n",
        b"no newline at end",
    ]
    assert messages[0].raw == lines[0] + lines[1]
    assert messages[3].ts_ns is None


def test_grep_matches_message_text_but_writes_original_records() -> None:
    """--grep searches the message, not JSON keys; output is the record, or the text (--text)."""
    records = [
        docker("GET /health 200\n", "2026-11-23T08:00:00Z"),
        docker("POST /login 500\n", "2026-11-23T08:00:01Z"),
        docker("stream\n", "2026-11-23T08:00:02Z"),
    ]
    out = io.BytesIO()
    assert write_messages(keyed(records), out, grep=re.compile(r"^POST"), text=False) == 1
    assert out.getvalue() == records[1]
    out = io.BytesIO()
    assert write_messages(keyed(records), out, grep=re.compile("stdout"), text=False) == 0
    out = io.BytesIO()
    write_messages(keyed(records), out, grep=re.compile(r"200$"), text=True)
    assert out.getvalue() == b"GET /health 200\n"


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=40)


@given(st.lists(st.tuples(texts, st.integers(0, 10**6)), max_size=30))
def test_grep_selects_exactly_the_matching_messages(items: list[tuple[str, int]]) -> None:
    """For any messages, --grep output is exactly the records whose text matches, in order."""
    records = [docker(t + "\n", f"2026-11-23T08:00:00.{n:06d}Z") for t, n in items]
    pattern = re.compile("a|é|[0-9]")
    out = io.BytesIO()
    write_messages(keyed(records), out, grep=pattern, text=False)
    assert out.getvalue() == b"".join(
        r for r, (t, _) in zip(records, items, strict=True) if pattern.search(t)
    )


@given(st.lists(st.lists(st.integers(0, 50), max_size=15), min_size=1, max_size=4))
def test_merge_is_time_ordered_and_keeps_each_stream_intact(streams: list[list[int]]) -> None:
    """Merged output is sorted by (monotone) time and each container's records keep their order."""
    made = []
    for index, offsets in enumerate(streams):
        records = [
            docker(f"{index}:{i}\n", f"2026-11-23T08:00:{s:02d}Z")
            for i, s in enumerate(sorted(offsets))
        ]
        made.append(records)
    iterators = [tagged(records, n) for n, records in enumerate(made)]
    merged = [m.raw for _, m in merge(iterators)]
    assert sorted(merged) == sorted(r for records in made for r in records)
    times = [parse_ts_ns(json.loads(r)["time"].encode()) or 0 for r in merged]
    assert times == sorted(times)
    for index, records in enumerate(made):
        assert [r for r in merged if json.loads(r)["log"].startswith(f"{index}:")] == records


def test_stream_chains_files_and_dates_plain_lines_by_their_predecessor(tmp_path: Path) -> None:
    """Segment files chain in order; undated lines take the time before them (start at first)."""
    first = tmp_path / "1.log"
    second = tmp_path / "2.log"
    first.write_bytes(b"undated\n" + docker("dated\n", "2026-11-23T08:00:05Z"))
    second.write_bytes(b"also undated\n")
    keyed = [(key, m.text) for key, _, m in stream_messages([first, second], 7)]
    five = parse_ts_ns(b"2026-11-23T08:00:05Z")
    assert keyed == [(7, b"undated\n"), (five, b"dated\n"), (five, b"also undated\n")]


def test_time_window_keeps_only_records_inside_it() -> None:
    """since/until (ns, inclusive) drop records outside the window; the rest stay in order."""
    records = [docker(f"{n}\n", f"2026-11-23T08:00:0{n}Z") for n in range(6)]
    since = parse_ts_ns(b"2026-11-23T08:00:01Z")
    until = parse_ts_ns(b"2026-11-23T08:00:04Z")
    out = io.BytesIO()
    assert write_messages(keyed(records), out, since_ns=since, until_ns=until) == 4
    assert out.getvalue() == b"".join(records[1:5])


any_log = st.text(
    alphabet=st.sampled_from(["a", "\\", '"', "\n", "n", "é", "\t", "}", ",", ":"]), max_size=12
)


@given(st.lists(any_log, min_size=1, max_size=8))
def test_dockerd_layout_fast_path_agrees_with_full_json_parsing(logs: list[str]) -> None:
    """Records in dockerd's compact layout group and date exactly as via json.loads (spaced
    JSON takes the full parser), for logs full of quotes, backslashes and newlines."""
    stamps = [f"2026-11-23T08:00:{n:02d}.5Z" for n in range(len(logs))]
    compact = [
        (
            json.dumps({"log": log, "stream": "stdout", "time": ts}, separators=(",", ":")) + "\n"
        ).encode()
        for log, ts in zip(logs, stamps, strict=True)
    ]
    spaced = [docker(log, ts) for log, ts in zip(logs, stamps, strict=True)]
    fast = [(m.raw.count(b"\n"), m.ts_ns, m.text) for m in iter_messages(compact)]
    slow = [(m.raw.count(b"\n"), m.ts_ns, m.text) for m in iter_messages(spaced)]
    assert fast == slow
    assert b"".join(text for _, _, text in fast) == "".join(logs).encode()


def test_deeply_nested_json_line_is_read_as_a_plain_line() -> None:
    """A line of 100 000 nested brackets is one message with no time, not a crash."""
    nested = b'{"log":' + b"[" * 100_000 + b"\n"
    messages = list(iter_messages([nested, docker("next\n", "2026-11-23T08:00:01Z")]))
    assert [(m.raw, m.ts_ns, m.text) for m in messages[:1]] == [(nested, None, nested)]
    assert len(messages) == 2


def test_message_time_is_its_first_valid_record_time() -> None:
    """A message whose first piece has a bad time takes the time of the next piece."""
    parts = [docker("a", "not-a-time"), docker("b\n", "2026-11-23T08:00:02Z")]
    [message] = iter_messages(parts)
    assert message.ts_ns == parse_ts_ns(b"2026-11-23T08:00:02Z")
