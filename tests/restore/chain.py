"""Chained streams for the continuity tests: segments with stream id, seq, prev link, end
flag and losses, exactly as the daemon's packer describes them, PUT to a real S3 bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from archiverd.formats.layout import Loss, SegmentDescription, object_key, stream_id
from archiverd.pack import Keyring
from tests.restore import corpus


@dataclass
class Stream:
    """One container's chained segments as stored (plaintext kept as the oracle)."""

    container: corpus.Container
    descriptions: list[SegmentDescription] = field(default_factory=list)
    plaintexts: list[bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    version_ids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def who(self) -> str:
        """How `get`/`verify` name this stream in messages."""
        c = self.container
        return f"container {c.name} ({c.id[:12]} on {c.host})"

    def plaintext(self, skip: Sequence[int] = ()) -> bytes:
        """The stream's bytes, without the segments at the `skip` indexes."""
        return b"".join(p for n, p in enumerate(self.plaintexts) if n not in skip)


def iso(moment: datetime) -> str:
    """How messages print a time."""
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def lines(c: corpus.Container, seq: int, first: datetime, count: int = 3) -> bytes:
    """`count` Docker json-file records one minute apart, naming the container and seq."""
    return b"".join(
        corpus.record(f"{c.host}/{c.name} seq {seq} line {n}\n", first + timedelta(minutes=n))
        for n in range(count)
    )


def build(
    s3: Any,
    bucket: str,
    keyring: Keyring,
    c: corpus.Container,
    start: datetime,
    count: int,
    *,
    ended: bool = True,
    losses: dict[int, Loss] | None = None,
) -> Stream:
    """`count` chained segments of `c`, ten minutes apart from `start`, PUT to `bucket`.

    ``losses[n]``: segment n records that loss, and its start offset skips the bytes.
    """
    stream = Stream(c)
    offset = 0
    prev: SegmentDescription | None = None
    for n in range(count):
        first = start + timedelta(minutes=10 * n)
        plain = lines(c, n, first)
        loss = (losses or {}).get(n)
        offset += loss.bytes or 0 if loss is not None else 0
        desc = SegmentDescription(
            host=c.host,
            container_id=c.id,
            seq=n,
            first_ts=first,
            last_ts=first + timedelta(minutes=2),
            start_offset=offset,
            end_offset=offset + len(plain),
            line_count=3,
            plaintext_sha256=hashlib.sha256(plain).hexdigest(),
            container_name=c.name,
            image="busybox:latest",
            source="docker",
            labels=c.labels,
            stream=stream_id(c.host, "docker:/var/lib/docker/containers", c.id),
            prev_seq=None if prev is None else prev.seq,
            prev_sha256="" if prev is None else prev.plaintext_sha256,
            end_of_stream=ended and n == count - 1,
            lost=(loss,) if loss is not None else (),
        )
        offset += len(plain)
        key = object_key(corpus.PREFIX, desc)
        stream.version_ids.append(corpus.put(s3, bucket, key, plain, desc, keyring))
        stream.descriptions.append(desc)
        stream.plaintexts.append(plain)
        stream.keys.append(key)
        prev = desc
    return stream


def replace_object(s3: Any, bucket: str, keyring: Keyring, stream: Stream, n: int) -> bytes:
    """PUT another valid object under segment n's key: same description and links, other
    plaintext (what someone holding the key could forge). Returns the forged plaintext."""
    desc = stream.descriptions[n]
    forged = lines(stream.container, n, desc.first_ts).replace(b"line 1", b"forged")
    forged_desc = replace(desc, plaintext_sha256=hashlib.sha256(forged).hexdigest())
    corpus.put(s3, bucket, stream.keys[n], forged, forged_desc, keyring)
    return forged


def delete_every_version(s3: Any, bucket: str, key: str) -> None:
    """Remove a key for good: every version and delete marker."""
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])
