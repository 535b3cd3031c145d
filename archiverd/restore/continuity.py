"""Is each stream complete? Sequence, offsets and chain checked from object metadata alone.

`check_streams` groups selected segments by (host, container) and walks them in seq order.
Each chained segment (docs/FORMAT.md, "Continuity") names the previous archived segment of
its stream (``archiverd-prev-seq``) and that segment's plaintext SHA-256
(``archiverd-prev-sha256``); the downloader separately proves that each object's plaintext
has the SHA-256 its metadata claims, so together the links prove the bytes form one unbroken
chain. What can be wrong:

- **gap**: a segment the chain names is not in the bucket (deleted, every version gone);
- **broken**: a link does not match (an object replaced by another one, offsets that do not
  meet, a seq twice, a segment after the end of its stream);
- **lost**: not a hole in the bucket but bytes the source lost before they were read,
  recorded at ingest (``archiverd-lost``);
- **open**: the last segment does not carry the end-of-stream flag: the container may still
  be running, or its last segments are missing (the bucket cannot tell these apart);
- **unchained**: segments written before continuity metadata; only their seq numbers (from
  the keys) are checked.

A window starting at ``--since`` need not begin at the stream's first segment, so with
``bounded_start`` the first selected segment's predecessor is not required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from archiverd.formats.layout import Loss, losses_of
from archiverd.restore.listing import Segment
from archiverd.restore.query import container_name

Kind = Literal["gap", "broken", "lost", "open", "unchained"]
Status = Literal["complete", "open", "gaps", "broken", "unchained"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong with (or worth saying about) a stream."""

    kind: Kind
    message: str
    lost_bytes: int | None = None


@dataclass
class StreamReport:
    """The verdict on one stream (one container on one host) as selected."""

    host: str
    container_id: str
    name: str
    segments: list[Segment] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def who(self) -> str:
        """``container web-1 (4f2a1c9e0b3d on h1)``: how messages name the stream."""
        short = self.container_id[:12]
        named = f"{self.name} ({short} on {self.host})" if self.name else f"{short} on {self.host}"
        return f"container {named}"

    @property
    def problem(self) -> bool:
        """A hole or broken link in the bucket (not a loss at source, not an open end)."""
        return any(f.kind in ("gap", "broken") for f in self.findings)

    @property
    def status(self) -> Status:
        """One word for the summary."""
        kinds = {f.kind for f in self.findings}
        if "broken" in kinds:
            return "broken"
        if "gap" in kinds:
            return "gaps"
        if "unchained" in kinds:
            return "unchained"
        return "open" if "open" in kinds else "complete"

    @property
    def losses(self) -> list[Finding]:
        """The losses at source recorded in this stream."""
        return [f for f in self.findings if f.kind == "lost"]


def check_streams(
    segments: Sequence[Segment], *, bounded_start: bool, bounded_end: bool = False
) -> list[StreamReport]:
    """One report per (host, container) among `segments` (live versions with metadata).

    ``bounded_end`` (an ``--until``): segments after the window were not selected, so a
    missing end-of-stream mark says nothing and is not reported.
    """
    groups: dict[tuple[str, str], list[Segment]] = {}
    for segment in segments:
        if not segment.is_delete_marker:
            groups.setdefault((segment.parsed.host, segment.parsed.container_id), []).append(
                segment
            )
    reports = []
    for (host, container_id), members in groups.items():
        members.sort(key=lambda s: (s.parsed.seq, s.parsed.first_ts))
        name = next((container_name(s.metadata) for s in members if s.metadata), "")
        report = StreamReport(host, container_id, name, members)
        _walk(report, bounded_start, bounded_end)
        reports.append(report)
    reports.sort(key=lambda r: (r.host, r.name, r.container_id))
    return reports


def _walk(report: StreamReport, bounded_start: bool, bounded_end: bool) -> None:
    add = report.findings.append
    previous: Segment | None = None
    unchained = 0
    for segment in report.segments:
        meta = segment.metadata or {}
        seq = segment.parsed.seq
        if previous is not None and previous.parsed.seq == seq:
            add(Finding("broken", f"{report.who}: seq {seq} is stored under two keys"))
            previous = segment
            continue
        if previous is not None and _ends(previous.metadata or {}):
            add(
                Finding(
                    "broken",
                    f"{report.who}: seq {seq} follows seq {previous.parsed.seq}, which says the "
                    "stream ended there",
                )
            )
        said = meta.get("archiverd-seq", str(seq))
        if said != str(seq):
            add(
                Finding(
                    "broken",
                    f"{report.who}: the object at {segment.key} (seq {seq}) says it is seq "
                    f"{said}: it was copied from another key",
                )
            )
        if "archiverd-stream" not in meta:
            unchained += 1
            if previous is not None and seq != previous.parsed.seq + 1:
                add(_gap(report, previous, segment, _seqs(previous.parsed.seq + 1, seq - 1)))
        else:
            _link(report, previous, segment, meta, bounded_start)
            for loss in losses_of(meta):
                add(_lost(report, loss))
        previous = segment
    if unchained:
        add(
            Finding(
                "unchained",
                f"{report.who}: {unchained} segment(s) written before continuity metadata "
                "(unchained): only their seq numbers could be checked",
            )
        )
    last = report.segments[-1]
    if bounded_end:
        return
    if "archiverd-stream" in (last.metadata or {}) and not _ends(last.metadata or {}):
        add(
            Finding(
                "open",
                f"{report.who}: no end-of-stream mark after seq {last.parsed.seq} (last record "
                f"{_iso(last.parsed.last_ts)}): still running, or the segments after it are "
                "missing",
            )
        )


def _link(
    report: StreamReport,
    previous: Segment | None,
    segment: Segment,
    meta: Mapping[str, str],
    bounded_start: bool,
) -> None:
    add = report.findings.append
    seq = segment.parsed.seq
    prev_text = meta.get("archiverd-prev-seq", "")
    if not prev_text.isdigit():
        if previous is not None:
            add(
                Finding(
                    "broken",
                    f"{report.who}: seq {seq} says it begins the stream, but seq "
                    f"{previous.parsed.seq} precedes it",
                )
            )
        return
    prev_seq = int(prev_text)
    if previous is None:
        if not bounded_start:
            add(_gap(report, None, segment, f"seq {prev_seq} (and any before it)"))
        return
    if previous.parsed.seq < prev_seq:
        add(_gap(report, previous, segment, _seqs(previous.parsed.seq + 1, prev_seq)))
        return
    if previous.parsed.seq > prev_seq:
        add(
            Finding(
                "broken",
                f"{report.who}: seq {seq} follows seq {prev_seq}, but seq "
                f"{previous.parsed.seq} is stored between them",
            )
        )
        return
    said = (previous.metadata or {}).get("archiverd-plaintext-sha256", "")
    if meta.get("archiverd-prev-sha256", "") != said:
        add(
            Finding(
                "broken",
                f"{report.who}: seq {prev_seq} is not the segment seq {seq} follows (its "
                f"SHA-256 differs from the chain's): the object at {previous.key} was replaced "
                "by another one",
            )
        )
        return
    _offsets(report, previous, segment, meta)


def _offsets(
    report: StreamReport, previous: Segment, segment: Segment, meta: Mapping[str, str]
) -> None:
    before = _range(previous.metadata or {})
    after = _range(meta)
    if before is None or after is None:
        return
    sizes = [loss.bytes for loss in losses_of(meta)]
    if None in sizes:
        return  # a loss of unknown size: the offsets cannot be compared
    expected = before[1] + sum(size for size in sizes if size is not None)
    if after[0] != expected:
        report.findings.append(
            Finding(
                "broken",
                f"{report.who}: seq {segment.parsed.seq} starts at byte {after[0]} but seq "
                f"{previous.parsed.seq} ends at byte {before[1]}"
                + (f" and {expected - before[1]} byte(s) were lost at source" if sizes else ""),
            )
        )


def _seqs(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seqs {first}-{last}"


def _gap(report: StreamReport, previous: Segment | None, segment: Segment, seqs: str) -> Finding:
    since = "the start of the stream" if previous is None else _iso(previous.parsed.last_ts)
    return Finding(
        "gap",
        f"{report.who}: {seqs} missing from the bucket: no records between {since} and "
        f"{_iso(segment.parsed.first_ts)}",
    )


def _lost(report: StreamReport, loss: Loss) -> Finding:
    size = "an unknown number of" if loss.bytes is None else str(loss.bytes)
    after = "?" if loss.after_ts is None else _iso(loss.after_ts)
    before = "?" if loss.before_ts is None else _iso(loss.before_ts)
    why = f" ({loss.reason})" if loss.reason else ""
    return Finding(
        "lost",
        f"{report.who}: lost at source: {size} bytes between {after} and {before}{why}",
        loss.bytes,
    )


def _ends(meta: Mapping[str, str]) -> bool:
    return meta.get("archiverd-end") == "true"


def _range(meta: Mapping[str, str]) -> tuple[int, int] | None:
    start, _, end = meta.get("archiverd-range", "").partition("-")
    if not (start.isdigit() and end.isdigit()):
        return None
    return int(start), int(end)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
