"""Where a segment lives in the bucket and what its object metadata says.

Key: ``<prefix><host>/<YYYY>/<MM>/<DD>/<container-id>/<first-ts>_<last-ts>_<seq>.log.gz.enc``,
partitioned by the UTC day of the segment's first record so `ls --since/--until` lists only
the days it needs. The key is a pure function of the segment, so a re-upload after a crash
targets the same key (invariant 2).

User metadata (S3 sends it as ``x-amz-meta-<name>``; S3 limits all of it to 2 KB) carries
the segment description under ``archiverd-*`` names beside the encryption envelope's
``x-amz-*`` names. Labels are dropped, largest first, when they would not fit.

Continuity (docs/FORMAT.md, "Continuity"): every segment names its stream, its seq, the
plaintext SHA-256 of the previous archived segment of that stream (a chain), whether it is
the last one of an ended stream, and the bytes the source lost before it. Objects without
``archiverd-stream`` were written by an earlier release and are *unchained*.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SUFFIX = ".log.gz.enc"
METADATA_LIMIT_BYTES = 2048
_TS_FORMAT = "%Y%m%dT%H%M%S"
_NAME = re.compile(
    r"^(?P<first>\d{8}T\d{6}\d{0,6}Z)_(?P<last>\d{8}T\d{6}\d{0,6}Z)_(?P<seq>\d+)"
    + re.escape(SUFFIX)
    + "$"
)


@dataclass(frozen=True)
class SegmentDescription:
    """What an archived segment is: whose log, which bytes, when. Plaintext facts only."""

    host: str
    container_id: str
    seq: int
    first_ts: datetime
    last_ts: datetime
    start_offset: int
    end_offset: int
    line_count: int
    plaintext_sha256: str
    container_name: str = ""
    image: str = ""
    source: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stream: str = ""
    """Stream id (`stream_id`); "" for segments written before continuity metadata."""
    prev_seq: int | None = None
    """Seq of the previous archived segment of the stream; None for its first segment."""
    prev_sha256: str = ""
    """Plaintext SHA-256 (hex) of that previous segment."""
    end_of_stream: bool = False
    """The stream ended (container removed, pod gone, file finished): nothing follows."""
    resumes: bool = False
    """The previous segment ended the stream and this one starts it again under the same key
    (a file name that comes back after its file was rotated away)."""
    lost: tuple[Loss, ...] = ()
    """Bytes the source lost between the previous archived segment and this one."""


@dataclass(frozen=True)
class Loss:
    """Bytes lost at the source (rotated away or vanished before they were read).

    `bytes` None: unknown amount; the timestamps bound when (None: unknown).
    """

    bytes: int | None
    after_ts: datetime | None
    before_ts: datetime | None
    reason: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Loss:
        """From the collector's ``{"bytes", "after_ts", "before_ts", "reason"}`` (ISO 8601)."""
        size = data.get("bytes")
        return cls(
            bytes=None if size is None else int(size),
            after_ts=_iso_or_none(data.get("after_ts")),
            before_ts=_iso_or_none(data.get("before_ts")),
            reason=str(data.get("reason", "")),
        )

    def to_json(self) -> dict[str, Any]:
        """The collector's form (ISO 8601 timestamps)."""
        return {
            "bytes": self.bytes,
            "after_ts": None if self.after_ts is None else self.after_ts.isoformat(),
            "before_ts": None if self.before_ts is None else self.before_ts.isoformat(),
            "reason": self.reason,
        }


def _iso_or_none(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def stream_id(host: str, source: str, key: str) -> str:
    """A stream's id: stable for its life on one host, 32 hex digits, reveals no names."""
    digest = hashlib.sha256(f"{host}\0{source}\0{key}".encode()).hexdigest()
    return digest[:32]


def format_ts(ts: datetime) -> str:
    """UTC, sortable, to the microsecond: ``20261123T084700123456Z``."""
    utc = ts.astimezone(UTC)
    return utc.strftime(_TS_FORMAT) + f"{utc.microsecond:06d}Z"


def parse_ts(text: str) -> datetime:
    """Inverse of `format_ts` (also accepts whole seconds); ValueError for anything else.

    Sliced by hand: `ls` over a fleet parses two per listed key, and strptime took most of
    its time (bench/fleet.py)."""
    body = text.removesuffix("Z")
    base, micros = body[:15], body[15:]
    if len(base) != 15 or base[8] != "T" or not (base[:8] + base[9:] + micros).isdigit():
        raise ValueError(f"{text!r} is not a timestamp like 20261123T084700123456Z")
    return datetime(
        int(base[0:4]), int(base[4:6]), int(base[6:8]),
        int(base[9:11]), int(base[11:13]), int(base[13:15]),
        int(micros.ljust(6, "0")) if micros else 0, tzinfo=UTC,
    )  # fmt: skip


def day_prefix(prefix: str, host: str, day: datetime) -> str:
    """The key prefix of one host's objects of one UTC day."""
    utc = day.astimezone(UTC)
    return f"{prefix}{host}/{utc:%Y/%m/%d}/"


def object_key(prefix: str, segment: SegmentDescription) -> str:
    """The deterministic object key of a segment."""
    return (
        f"{day_prefix(prefix, segment.host, segment.first_ts)}{segment.container_id}/"
        f"{format_ts(segment.first_ts)}_{format_ts(segment.last_ts)}_{segment.seq:08d}{SUFFIX}"
    )


@dataclass(frozen=True)
class ParsedKey:
    """What an object key alone tells (no metadata request needed)."""

    host: str
    day: str
    container_id: str
    first_ts: datetime
    last_ts: datetime
    seq: int


def parse_key(prefix: str, key: str) -> ParsedKey | None:
    """Parse a key made by `object_key`; None for anything else in the bucket."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) != 6:
        return None
    host, year, month, day, container_id, name = parts
    match = _NAME.match(name)
    if match is None:
        return None
    return ParsedKey(
        host=host,
        day=f"{year}-{month}-{day}",
        container_id=container_id,
        first_ts=parse_ts(match["first"]),
        last_ts=parse_ts(match["last"]),
        seq=int(match["seq"]),
    )


def segment_metadata(
    segment: SegmentDescription, envelope: Mapping[str, str], key_id: str
) -> dict[str, str]:
    """Object user metadata: the encryption envelope plus the segment description.

    Values are ASCII (names JSON-escaped) because S3 metadata travels in HTTP headers.
    """
    meta = dict(envelope)
    meta.update(
        {
            "archiverd-container-id": segment.container_id,
            "archiverd-container-name": _ascii(segment.container_name),
            "archiverd-image": _ascii(segment.image),
            "archiverd-source": _ascii(segment.source),
            "archiverd-host": _ascii(segment.host),
            "archiverd-range": f"{segment.start_offset}-{segment.end_offset}",
            "archiverd-lines": str(segment.line_count),
            "archiverd-first-ts": format_ts(segment.first_ts),
            "archiverd-last-ts": format_ts(segment.last_ts),
            "archiverd-plaintext-sha256": segment.plaintext_sha256,
            "archiverd-key-id": key_id,
        }
    )
    if segment.stream:
        meta.update(continuity_metadata(segment))
    labels = dict(segment.labels)
    while True:
        meta["archiverd-labels"] = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        if _size(meta) <= METADATA_LIMIT_BYTES or not labels:
            break
        del labels[max(labels, key=lambda name: len(name) + len(labels[name]))]
        meta["archiverd-labels-truncated"] = "true"
    if _size(meta) > METADATA_LIMIT_BYTES and len(segment.lost) > 1:
        # Still too big without labels: the losses become one entry (same total bytes and
        # time span); the chain fields themselves are small and always kept.
        meta["archiverd-lost"] = json.dumps(
            [_loss_entry(_fold(segment.lost, keep=1)[0])], separators=(",", ":")
        )
    return meta


def _ascii(text: str) -> str:
    return json.dumps(text)[1:-1] if not text.isascii() else text


def _size(meta: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in meta.items())


MAX_LOSSES = 8
"""Losses kept one by one in metadata; more are summed into the last entry (2 KB limit)."""


def continuity_metadata(segment: SegmentDescription) -> dict[str, str]:
    """The ``archiverd-stream``/``-seq``/``-prev-*``/``-end``/``-lost`` fields (FORMAT.md)."""
    meta = {
        "archiverd-stream": segment.stream,
        "archiverd-seq": str(segment.seq),
        # "none", not "": some S3 servers (SeaweedFS) drop empty metadata values.
        "archiverd-prev-seq": "none" if segment.prev_seq is None else str(segment.prev_seq),
        "archiverd-prev-sha256": segment.prev_sha256 or "none",
        "archiverd-end": "true" if segment.end_of_stream else "false",
    }
    if segment.resumes:
        meta["archiverd-resumes"] = "true"
    if segment.lost:
        meta["archiverd-lost"] = json.dumps(
            [_loss_entry(loss) for loss in _fold(segment.lost)], separators=(",", ":")
        )
    return meta


def losses_of(metadata: Mapping[str, str]) -> list[Loss]:
    """The losses recorded in object metadata ([] when none or unreadable)."""
    try:
        entries = json.loads(metadata.get("archiverd-lost", "[]"))
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            out.append(
                Loss(
                    bytes=entry.get("b"),
                    after_ts=_ts_or_none(entry.get("a")),
                    before_ts=_ts_or_none(entry.get("z")),
                    reason=str(entry.get("r", "")),
                )
            )
    return out


def _ts_or_none(value: object) -> datetime | None:
    try:
        return parse_ts(str(value)) if value else None
    except ValueError:
        return None


def _loss_entry(loss: Loss) -> dict[str, Any]:
    return {
        "b": loss.bytes,
        "a": None if loss.after_ts is None else format_ts(loss.after_ts),
        "z": None if loss.before_ts is None else format_ts(loss.before_ts),
        "r": _ascii(loss.reason)[:80],
    }


def _fold(losses: tuple[Loss, ...], keep: int = MAX_LOSSES) -> list[Loss]:
    """At most `keep` entries: the rest summed into one spanning their times."""
    if len(losses) <= keep:
        return list(losses)
    head, rest = list(losses[: keep - 1]), losses[keep - 1 :]
    sizes = [loss.bytes for loss in rest]
    afters = [loss.after_ts for loss in rest if loss.after_ts is not None]
    befores = [loss.before_ts for loss in rest if loss.before_ts is not None]
    head.append(
        Loss(
            bytes=None if None in sizes else sum(s for s in sizes if s is not None),
            after_ts=min(afters) if afters else None,
            before_ts=max(befores) if befores else None,
            reason=f"{len(rest)} losses",
        )
    )
    return head
