"""A realistic archive for the restore tests: hundreds of packed segments on a real S3 server.

Two hosts, eight containers (one name reused across hosts), four UTC days, eight segments per
container per day (some crossing midnight), Docker json-file records with a partial (16 KiB
style) record pair, old object versions, delete markers, and two master keys (a rotation).
The `Corpus` keeps every plaintext so tests compare `ls`/`get` against an exact oracle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from archiverd.formats.layout import SegmentDescription, object_key, segment_metadata
from archiverd.pack import Keyring, pack_stream

PREFIX = "archive/"
DAYS = 4
SLOTS = 8
LINES = 10


@dataclass(frozen=True)
class Container:
    """One archived container."""

    host: str
    name: str
    labels: dict[str, str] = field(hash=False)
    old_key: bool = False

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.host}/{self.name}".encode()).hexdigest()


CONTAINERS = [
    Container("h1", "web-1", {"app": "web", "tier": "front"}),
    Container("h1", "web-2", {"app": "web", "tier": "back"}),
    Container("h1", "db-1", {"app": "db", "tier": "back"}),
    Container("h1", "worker", {"app": "worker"}),
    Container("h2", "web-1", {"app": "web", "tier": "front"}, old_key=True),
    Container("h2", "db-2", {"app": "db"}, old_key=True),
    Container("h2", "cron", {"app": "cron"}),
    Container("h2", "api", {"app": "api", "tier": "front"}),
]


@dataclass
class Version:
    """One stored version (or delete marker) of one key."""

    key: str
    version_id: str
    plaintext: bytes = b""
    is_delete_marker: bool = False
    is_latest: bool = False


@dataclass
class Seg:
    """One segment: its description, key, and the version `get` restores by default."""

    container: Container
    description: SegmentDescription
    key: str
    plaintext: bytes
    versions: list[Version] = field(default_factory=list)

    @property
    def deleted(self) -> bool:
        return self.versions[-1].is_delete_marker


@dataclass
class Corpus:
    """Everything stored, newest version last per key."""

    bucket: str
    base_day: datetime
    segments: list[Seg]

    def live(self) -> list[Seg]:
        """Segments whose latest version is not a delete marker."""
        return [s for s in self.segments if not s.deleted]

    def restored(self) -> list[Seg]:
        """What `get` restores: every segment, a deleted one from its newest live version
        (here always the plaintext it was archived with)."""
        return [s for s in self.segments if any(not v.is_delete_marker for v in s.versions)]


def ts_text(moment: datetime) -> str:
    """Docker's RFC 3339 with nanoseconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def record(log: str, moment: datetime, stream: str = "stdout") -> bytes:
    """One Docker json-file record."""
    fields = {"log": log, "stream": stream, "time": ts_text(moment)}
    return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


def segment_records(c: Container, day: int, slot: int, first: datetime, last: datetime) -> bytes:
    """Ten records spread evenly from `first` to `last`; some ERRORs, one split record."""
    step = (last - first) / (LINES - 1)
    out = io.BytesIO()
    for n in range(LINES):
        moment = first + step * n
        code = (day * SLOTS + slot + n) % 11
        if n == 4 and slot % 3 == 0:
            # A long line dockerd split in two records (no newline on the first piece).
            out.write(record(f"{c.host}/{c.name} long line d{day} s{slot} " + "x" * 40, moment))
            out.write(record(f" ERROR code={code} tail\n", moment))
            continue
        stream = "stderr" if n % 4 == 3 else "stdout"
        text = f"{c.host}/{c.name} line {n} d{day} s{slot}" + (
            f" ERROR code={code}" if n % 3 == 0 else ""
        )
        out.write(record(text + "\n", moment, stream))
    return out.getvalue()


def build(s3: Any, bucket: str, keys: tuple[Keyring, Keyring], now: datetime) -> Corpus:
    """Pack and store the corpus in `bucket` under `PREFIX` (the old key for some hosts)."""
    new_key, old_key = keys
    base = (now - timedelta(days=DAYS + 2)).replace(hour=0, minute=0, second=0, microsecond=0)
    segments: list[Seg] = []
    for index, c in enumerate(CONTAINERS):
        seq = 0
        offset = 0
        for day in range(DAYS):
            for slot in range(SLOTS):
                first = base + timedelta(days=day, hours=3 * slot, minutes=7 * index, seconds=slot)
                span = timedelta(hours=2, minutes=59) if slot == SLOTS - 1 else timedelta(hours=2)
                last = first + span
                plain = segment_records(c, day, slot, first, last)
                seq += 1
                desc = SegmentDescription(
                    host=c.host,
                    container_id=c.id,
                    seq=seq,
                    first_ts=first,
                    last_ts=last,
                    start_offset=offset,
                    end_offset=offset + len(plain),
                    line_count=LINES,
                    plaintext_sha256=hashlib.sha256(plain).hexdigest(),
                    container_name=c.name,
                    image="busybox:latest",
                    source="docker",
                    labels=c.labels,
                )
                offset += len(plain)
                key = object_key(PREFIX, desc)
                seg = Seg(c, desc, key, plain)
                if (index + day + slot) % 37 == 5:
                    # An earlier upload of this key with other content (its own metadata).
                    older = b"an earlier version of " + plain[:50] + b"\n"
                    put(s3, bucket, key, older, desc, old_key if c.old_key else new_key, seg)
                put(s3, bucket, key, plain, desc, old_key if c.old_key else new_key, seg)
                if (index * 3 + day * 5 + slot) % 41 == 7:
                    answer = s3.delete_object(Bucket=bucket, Key=key)
                    seg.versions.append(Version(key, answer["VersionId"], is_delete_marker=True))
                seg.versions[-1].is_latest = True
                segments.append(seg)
    return Corpus(bucket, base, segments)


def put(
    s3: Any,
    bucket: str,
    key: str,
    plain: bytes,
    desc: SegmentDescription,
    keyring: Keyring,
    seg: Seg | None = None,
    *,
    body_filter: Any = None,
) -> str:
    """Pack `plain` and PUT it with its metadata; return the version id."""
    packed, metadata = pack(plain, desc, keyring)
    if body_filter is not None:
        packed = body_filter(packed)
    answer = s3.put_object(Bucket=bucket, Key=key, Body=packed, Metadata=metadata)
    if seg is not None:
        seg.versions.append(Version(key, answer["VersionId"], plain))
    return str(answer["VersionId"])


def pack(plain: bytes, desc: SegmentDescription, keyring: Keyring) -> tuple[bytes, dict[str, str]]:
    """The packed body and the full object metadata, as the daemon makes them."""
    from dataclasses import replace

    body = io.BytesIO()
    result = pack_stream(io.BytesIO(plain), body, keyring)
    desc = replace(desc, plaintext_sha256=result.plaintext_sha256)
    return body.getvalue(), segment_metadata(desc, result.envelope, result.key_id)


def write_key(path: Path) -> tuple[Path, bytes]:
    """A fresh raw master key file (base64, mode 0600)."""
    raw = os.urandom(32)
    path.write_text(base64.b64encode(raw).decode() + "\n")
    path.chmod(0o600)
    return path, raw


def write_config(
    path: Path,
    *,
    url: str,
    endpoint: str = "",
    key_file: Path | None = None,
    old_key_files: Iterable[Path] = (),
    credentials: tuple[str, str] | None = None,
) -> Path:
    """A TOML config for `ls`/`get` (test credentials inline; never do this in production)."""
    lines = ["[destination]", f'url = "{url}"']
    if endpoint:
        lines += [f'endpoint_url = "{endpoint}"', 'addressing_style = "path"']
    if credentials is not None:
        lines += [f'access_key_id = "{credentials[0]}"', f'secret_access_key = "{credentials[1]}"']
    lines += ["", "[encryption]"]
    if key_file is not None:
        lines.append(f'key_file = "{key_file}"')
    old = ", ".join(f'"{p}"' for p in old_key_files)
    lines.append(f"decrypt_key_files = [{old}]")
    lines += ["", "[state]", f'dir = "{path.parent / "state"}"']
    path.write_text("\n".join(lines) + "\n")
    return path
