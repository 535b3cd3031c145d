"""Where a segment lives in the bucket and what its object metadata says.

Key: ``<prefix><host>/<YYYY>/<MM>/<DD>/<container-id>/<first-ts>_<last-ts>_<seq>.log.gz.enc``,
partitioned by the UTC day of the segment's first record so `ls --since/--until` lists only
the days it needs. The key is a pure function of the segment, so a re-upload after a crash
targets the same key (invariant 2).

User metadata (S3 sends it as ``x-amz-meta-<name>``; S3 limits all of it to 2 KB) carries
the segment description under ``archiverd-*`` names beside the encryption envelope's
``x-amz-*`` names. Labels are dropped, largest first, when they would not fit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
    labels = dict(segment.labels)
    while True:
        meta["archiverd-labels"] = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        if _size(meta) <= METADATA_LIMIT_BYTES or not labels:
            break
        del labels[max(labels, key=lambda name: len(name) + len(labels[name]))]
        meta["archiverd-labels-truncated"] = "true"
    return meta


def _ascii(text: str) -> str:
    return json.dumps(text)[1:-1] if not text.isascii() else text


def _size(meta: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in meta.items())
