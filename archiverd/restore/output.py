"""How `ls` shows segments (a table on a terminal, JSON lines with ``--json``) and how `get`
shows progress (a one-line bar on stderr, only when stderr is a terminal)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from archiverd.logs import printable
from archiverd.restore.listing import Segment
from archiverd.restore.query import container_name, labels_of


def segment_record(segment: Segment) -> dict[str, Any]:
    """Everything known about one listed version, JSON-ready (metadata fields when fetched)."""
    record: dict[str, Any] = {
        "key": segment.key,
        "host": segment.parsed.host,
        "container_id": segment.parsed.container_id,
        "first_ts": _iso(segment.parsed.first_ts),
        "last_ts": _iso(segment.parsed.last_ts),
        "seq": segment.parsed.seq,
        "size": segment.size,
        "version_id": segment.version_id,
        "is_latest": segment.is_latest,
        "is_delete_marker": segment.is_delete_marker,
        "recovered": segment.recovered,
        "last_modified": _iso(segment.last_modified),
    }
    meta = segment.metadata
    if meta is not None:
        record.update(
            container_name=container_name(meta),
            image=meta.get("archiverd-image", ""),
            labels=labels_of(meta),
            lines=int(meta.get("archiverd-lines", "0") or 0),
            range=meta.get("archiverd-range", ""),
            plaintext_sha256=meta.get("archiverd-plaintext-sha256", ""),
            key_id=meta.get("archiverd-key-id", ""),
        )
    return record


def write_json_lines(segments: Sequence[Segment], out: TextIO) -> None:
    """One JSON object per line, in the order given."""
    for segment in segments:
        out.write(json.dumps(segment_record(segment), sort_keys=True) + "\n")


def write_table(segments: Sequence[Segment], out: TextIO, *, versions: bool) -> None:
    """Aligned columns for people; names appear when metadata was fetched."""
    with_meta = any(s.metadata is not None for s in segments)
    header = ["FIRST (UTC)", "LAST (UTC)", "HOST", "CONTAINER"]
    header += ["NAME", "LINES"] if with_meta else []
    header += ["SEQ", "SIZE"]
    header += ["VERSION", "STATE"] if versions else []
    rows = [header]
    for s in segments:
        row = [
            _short(s.parsed.first_ts),
            _short(s.parsed.last_ts),
            s.parsed.host,
            s.parsed.container_id[:12],
        ]
        if with_meta:
            meta = s.metadata or {}
            row += [container_name(meta) or "-", meta.get("archiverd-lines", "-")]
        row += [str(s.parsed.seq), "-" if s.is_delete_marker else human_bytes(s.size)]
        if versions:
            state = "deleted" if s.is_delete_marker else ""
            state = ",".join(x for x in (state, "latest" if s.is_latest else "") if x)
            if s.recovered:
                state = "old,restored-by-get"  # the newest live version under a delete marker
            row += [s.version_id or "-", state or "old"]
        rows.append(row)
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def human_bytes(size: float) -> str:
    """1536 -> '1.5K' (binary units, like `ls -h`)."""
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{int(size)}B" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A one-line progress bar on `stream`, drawn only when `enabled` (a terminal)."""

    def __init__(
        self,
        total_segments: int,
        total_bytes: int,
        stream: TextIO,
        *,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_segments = total_segments
        self.total_bytes = total_bytes
        self.done_segments = 0
        self.done_bytes = 0
        self._stream = stream
        self._enabled = enabled
        self._clock = clock
        self._started = clock()
        self._drawn = 0.0

    def advance(self, packed_bytes: int) -> None:
        """One more segment finished (or skipped) with `packed_bytes` downloaded."""
        self.done_segments += 1
        self.done_bytes += packed_bytes
        now = self._clock()
        if now - self._drawn >= 0.1 or self.done_segments == self.total_segments:
            self._drawn = now
            self.draw()

    def line(self) -> str:
        """The bar's text (without the carriage return)."""
        width = 24
        share = self.done_segments / self.total_segments if self.total_segments else 1.0
        filled = int(width * share)
        elapsed = max(self._clock() - self._started, 1e-6)
        rate = human_bytes(self.done_bytes / elapsed)
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done_segments}/"
            f"{self.total_segments} segments {human_bytes(self.done_bytes)}/"
            f"{human_bytes(self.total_bytes)} {rate}/s"
        )

    def draw(self) -> None:
        """Redraw in place (no-op when disabled)."""
        if self._enabled:
            self._stream.write("\r" + self.line())
            self._stream.flush()

    def finish(self) -> None:
        """End the bar's line so later messages start on their own."""
        if self._enabled:
            self.draw()
            self._stream.write("\n")
            self._stream.flush()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _short(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
