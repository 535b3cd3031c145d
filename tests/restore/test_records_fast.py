"""The raw-record merge of `get --out -` equals a simple reference merge of the messages."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.restore.records import (
    stream_messages,
    stream_records,
    write_messages,
    write_records,
)

# Few distinct seconds and fractions, so equal timestamps and ties across streams are common;
# odd shapes (short fractions, offsets, lowercase, a leap second, an impossible date) too.
_STAMPS = st.one_of(
    st.builds(
        "2026-11-23T08:00:0{}.{}Z".format,
        st.integers(0, 2),
        st.sampled_from(["000000000", "000000001", "500000000", "999999999"]),
    ),
    st.sampled_from(
        [
            "2026-11-23T08:00:01Z",
            "2026-11-23T08:00:01.5Z",
            "2026-11-23T09:00:01.000000001+01:00",
            "2026-11-23t08:00:01.000000001z",
            "2026-11-23 08:00:01.000000001Z",
            "2026-11-23T07:59:60.000000001Z",
            "2026-13-45T08:00:01.000000001Z",
            "2026-11-23T08:00:0x.000000001Z",
            "not-a-time",
        ]
    ),
)
_TEXT = st.text(alphabet='ab \\"\n{}', max_size=12)


@st.composite
def _record(draw: st.DrawFn) -> bytes:
    """One Docker (dockerd layout or spaced JSON), CRI or plain record; maybe a partial."""
    kind = draw(st.sampled_from(["docker", "spaced", "cri", "plain"]))
    stamp = draw(_STAMPS)
    text = draw(_TEXT).replace("\n", "")
    partial = draw(st.booleans())
    if kind in ("docker", "spaced"):
        log = text if partial else text + "\n"
        record = {"log": log, "stream": "stdout", "time": stamp}
        separators = (",", ":") if kind == "docker" else (", ", ": ")
        return json.dumps(record, separators=separators).encode() + b"\n"
    if kind == "cri":
        return f"{stamp} stderr {'P' if partial else 'F'} {text}\n".encode()
    return text.encode() + b"\n"


_FILE = st.builds(
    # `cut`: the file ends without its last newline (a segment cut mid-record).
    lambda records, cut: b"".join(records)[:-1] if cut else b"".join(records),
    st.lists(_record(), max_size=12),
    st.booleans(),
)
_WINDOW = st.one_of(st.none(), st.integers(1_795_420_800, 1_795_420_803).map(lambda s: s * 10**9))


def _reference(
    streams: list[list[Path]], starts: list[int], since: int | None, until: int | None
) -> tuple[bytes, int]:
    """Every message keyed as `stream_messages` keys it, sorted by (key, stream, position)."""
    keyed = [
        (key, order, position, message.raw)
        for order, (paths, start) in enumerate(zip(streams, starts, strict=True))
        for position, (key, _, message) in enumerate(stream_messages(paths, start, order))
    ]
    kept = [
        raw
        for key, _, _, raw in sorted(keyed)
        if (since is None or key >= since) and (until is None or key <= until)
    ]
    return b"".join(kept), len(kept)


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(st.lists(_FILE, min_size=1, max_size=3), min_size=1, max_size=3),
    starts=st.lists(
        st.integers(1_795_420_799, 1_795_420_802).map(lambda s: s * 10**9), min_size=3, max_size=3
    ),
    since=_WINDOW,
    until=_WINDOW,
)
@pytest.mark.slow
def test_raw_merge_equals_reference_merge(
    files: list[list[bytes]], starts: list[int], since: int | None, until: int | None
) -> None:
    """Fast merge = sorted reference: ties, undated lines, partials kept whole, trimming."""
    with tempfile.TemporaryDirectory() as tmp:
        streams: list[list[Path]] = []
        for n, contents in enumerate(files):
            paths = []
            for m, content in enumerate(contents):
                path = Path(tmp) / f"{n}-{m}.log"
                path.write_bytes(content)
                paths.append(path)
            streams.append(paths)
        starts = starts[: len(streams)]
        for n, (paths, start) in enumerate(zip(streams, starts, strict=True)):
            # Same keys per stream, not just the same merged bytes.
            assert list(stream_records(paths, start, n)) == [
                (key, order, message.raw)
                for key, order, message in stream_messages(paths, start, n)
            ]
        expected, expected_count = _reference(streams, starts, since, until)
        fast = io.BytesIO()
        count = write_records(
            [stream_records(p, s, n) for n, (p, s) in enumerate(zip(streams, starts, strict=True))],
            fast,
            since_ns=since,
            until_ns=until,
        )
        slow = io.BytesIO()
        write_messages(
            (
                (key, message)
                for key, _, message in sorted(
                    (
                        item
                        for n, (p, s) in enumerate(zip(streams, starts, strict=True))
                        for item in stream_messages(p, s, n)
                    ),
                    key=lambda item: (item[0], item[1]),
                )
            ),
            slow,
            since_ns=since,
            until_ns=until,
        )
    assert (fast.getvalue(), count) == (expected, expected_count)
    assert slow.getvalue() == expected
