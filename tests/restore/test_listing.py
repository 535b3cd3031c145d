"""Listing against an in-memory destination: which prefixes are listed, when HEADs happen."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.errors import NoMatchError
from archiverd.formats.layout import SegmentDescription, object_key
from archiverd.restore.listing import Segment, find_version, select
from archiverd.restore.output import Progress, human_bytes, write_table
from archiverd.restore.query import Query

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
DAY0 = datetime(2026, 11, 18, tzinfo=UTC)


class MemoryDestination:
    """Objects in a dict; records every listing prefix and HEAD (injected, not patched)."""

    def __init__(self, *, delimiter: bool) -> None:
        self.url = "mem://"
        self.prefix = "p/"
        self.objects: dict[str, list[tuple[str, dict[str, str], bool]]] = {}
        self.listed: list[str] = []
        self.heads: list[str] = []
        if delimiter:
            self.list_prefixes = self._list_prefixes

    def add(self, key: str, metadata: dict[str, str], *, marker: bool = False) -> str:
        versions = self.objects.setdefault(key, [])
        version_id = f"v{len(versions)}"
        versions.append((version_id, metadata, marker))
        return version_id

    async def _list_prefixes(self, prefix: str) -> AsyncIterator[str]:
        seen = sorted({prefix + k[len(prefix) :].split("/", 1)[0] + "/" for k in self.objects})
        for item in seen:
            yield item

    async def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        self.listed.append(prefix)
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            versions = self.objects[key]
            for n, (vid, _, marker) in reversed(list(enumerate(versions))):
                yield ObjectVersion(key, vid, 10, NOW, n == len(versions) - 1, marker)

    async def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        async for v in self.list_versions(prefix):
            if v.is_latest and not v.is_delete_marker:
                yield v

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        self.heads.append(key)
        for vid, meta, marker in reversed(self.objects.get(key, [])):
            if version_id in (None, vid):
                return None if marker else StoredObject(key, vid, 10, "", meta)
        return None

    async def check(self) -> str:
        return "memory"

    async def put_file(
        self, key: str, path: Path, metadata: Mapping[str, str], sha256_b64: str
    ) -> StoredObject:
        raise NotImplementedError

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def fill(dest: MemoryDestination) -> None:
    """3 hosts x 5 days x 2 containers, one segment each; names and labels in metadata."""
    for h in range(3):
        for d in range(5):
            for c in range(2):
                first = DAY0 + timedelta(days=d, hours=10 + c)
                desc = SegmentDescription(
                    host=f"host{h}",
                    container_id=f"{c:x}" * 64,
                    seq=d,
                    first_ts=first,
                    last_ts=first + timedelta(hours=1),
                    start_offset=0,
                    end_offset=1,
                    line_count=1,
                    plaintext_sha256="",
                )
                meta = {
                    "archiverd-container-name": f"app{c}",
                    "archiverd-labels": f'{{"tier":"{"front" if c else "back"}"}}',
                }
                dest.add(object_key("p/", desc), meta)


async def test_since_with_host_lists_only_the_planned_day_partitions() -> None:
    """--host + --since/--until: one listing per day from since-lookback to until; no HEAD."""
    dest = MemoryDestination(delimiter=False)
    fill(dest)
    query = Query(
        host="host1",
        since=DAY0 + timedelta(days=2, hours=10, minutes=30),
        until=DAY0 + timedelta(days=3, hours=10, minutes=30),
    )
    found = await select(dest, query, NOW)
    assert dest.listed == ["p/host1/2026/11/19/", "p/host1/2026/11/20/", "p/host1/2026/11/21/"]
    assert [(s.parsed.day, s.parsed.container_id[0]) for s in found.segments] == [
        ("2026-11-20", "0"),
        ("2026-11-20", "1"),
        ("2026-11-21", "0"),
    ]
    assert dest.heads == []


async def test_hosts_come_from_a_delimiter_listing_when_offered() -> None:
    """Without --host, a destination with list_prefixes yields hosts; days are planned per host."""
    dest = MemoryDestination(delimiter=True)
    fill(dest)
    query = Query(
        since=DAY0 + timedelta(days=4, hours=10), until=DAY0 + timedelta(days=4, hours=10)
    )
    found = await select(dest, query, NOW)
    assert len(found.segments) == 3
    assert dest.listed == [f"p/host{h}/2026/11/{d}/" for h in range(3) for d in (21, 22)]


async def test_without_a_delimiter_listing_the_prefix_is_listed_once() -> None:
    """A destination without list_prefixes and no --host: one listing of the whole prefix."""
    dest = MemoryDestination(delimiter=False)
    fill(dest)
    found = await select(dest, Query(), NOW)
    assert dest.listed == ["p/"]
    assert len(found.segments) == 30


async def test_name_and_label_filters_head_the_first_and_last_key_of_each_container() -> None:
    """A name or label filter HEADs the first and last key of each (host, container id) in
    the window (not every key, not per version); id filters never HEAD."""
    dest = MemoryDestination(delimiter=False)
    fill(dest)
    key = next(iter(dest.objects))
    dest.add(key, dest.objects[key][0][1])  # a second version of one key
    found = await select(dest, Query(container="app1"), NOW, versions=True)
    assert len(dest.heads) == len(set(dest.heads)) == 3 * 2 * 2  # hosts x containers x 2
    assert {s.parsed.container_id[0] for s in found.segments} == {"1"}
    assert len(found.segments) == 15
    dest.heads.clear()
    found = await select(dest, Query(container="0000"), NOW)
    assert dest.heads == []
    assert len(found.segments) == 15
    found = await select(dest, Query(labels={"tier": "front"}), NOW)
    assert {s.parsed.container_id[0] for s in found.segments} == {"1"}


async def test_deleted_keys_are_counted_for_the_message() -> None:
    """When nothing live matches, keys hidden by a delete marker are counted."""
    dest = MemoryDestination(delimiter=False)
    fill(dest)
    for key in list(dest.objects)[:2]:
        dest.add(key, {}, marker=True)
    query = Query(
        host="host0",
        since=DAY0 + timedelta(hours=10, minutes=10),
        until=DAY0 + timedelta(hours=10, minutes=20),
    )
    found = await select(dest, query, NOW)
    assert (found.segments, found.deleted) == ([], 1)


def _segment(version_id: str, marker: bool, latest: bool = True) -> Segment:
    from archiverd.formats.layout import parse_key

    desc = SegmentDescription(
        host="h",
        container_id="c",
        seq=1,
        first_ts=NOW,
        last_ts=NOW,
        start_offset=0,
        end_offset=1,
        line_count=1,
        plaintext_sha256="",
    )
    key = object_key("", desc)
    parsed = parse_key("", key)
    assert parsed is not None
    return Segment(key, parsed, version_id, 1536, NOW, is_latest=latest, is_delete_marker=marker)


def test_find_version_explains_markers_and_absence() -> None:
    """--version-id: a marker and an unknown id are NoMatchError with what to do next."""
    from archiverd.restore.listing import Selection

    selection = Selection([_segment("live", False), _segment("gone", True)])
    assert find_version(selection, "live").version_id == "live"
    with pytest.raises(NoMatchError, match="is a delete marker"):
        find_version(selection, "gone")
    with pytest.raises(NoMatchError, match=r"no version nope among 1 matching key\(s\)"):
        find_version(selection, "nope")


def test_table_and_sizes_are_human_readable() -> None:
    """The table aligns columns; sizes use binary units like ls -h."""
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == ["0B", "1023B", "1.5K", "5.0G"]
    out = io.StringIO()
    write_table([_segment("v1", False, False), _segment("v2", True)], out, versions=True)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "FIRST",
        "(UTC)",
        "LAST",
        "(UTC)",
        "HOST",
        "CONTAINER",
        "SEQ",
        "SIZE",
        "VERSION",
        "STATE",
    ]
    assert lines[1].split()[-3:] == ["1.5K", "v1", "old"]
    assert lines[2].split()[-3:] == ["-", "v2", "deleted,latest"]


def test_progress_draws_only_when_enabled() -> None:
    """On a terminal the bar redraws in place; otherwise stderr gets nothing."""
    ticks = iter(float(n) for n in range(100))
    shown = io.StringIO()
    bar = Progress(2, 2048, shown, enabled=True, clock=lambda: next(ticks))
    bar.advance(1024)
    bar.advance(1024)
    bar.finish()
    assert shown.getvalue().startswith("\r[############............] 1/2 segments 1.0K/2.0K")
    assert "2/2 segments 2.0K/2.0K" in shown.getvalue()
    assert shown.getvalue().endswith("\n")
    hidden = io.StringIO()
    quiet = Progress(2, 2048, hidden, enabled=False)
    quiet.advance(1024)
    quiet.finish()
    assert hidden.getvalue() == ""


async def test_a_container_renamed_in_the_window_has_every_key_headed() -> None:
    """When the first and last key of a container disagree on its name, each key is HEADed
    and matched on its own: only the segments written under the asked name are found."""
    dest = MemoryDestination(delimiter=False)
    fill(dest)
    renamed = sorted(k for k in dest.objects if k.startswith("p/host0/") and "/1111" in k)
    for key in renamed[3:]:
        dest.objects[key][0][1]["archiverd-container-name"] = "app1-new"
    found = await select(dest, Query(container="app1-new"), NOW)
    assert sorted(s.key for s in found.segments) == renamed[3:]
    assert set(renamed) <= set(dest.heads)
    found = await select(dest, Query(container="app1"), NOW)
    assert len(found.segments) == 15 - 2


class SlowListing(MemoryDestination):
    """Each partition listing takes a few event-loop turns; records how many overlap."""

    def __init__(self) -> None:
        super().__init__(delimiter=True)
        self.in_flight = 0
        self.most = 0

    async def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        try:
            async for version in super().list_versions(prefix):
                yield version
        finally:
            self.in_flight -= 1


async def test_partitions_are_listed_concurrently_within_the_limit() -> None:
    """A fleet-wide query lists its host/day partitions `concurrency` at a time (a round
    trip each), and finds exactly what the one-at-a-time listing found."""
    dest = SlowListing()
    fill(dest)
    query = Query(since=DAY0 + timedelta(days=1), until=DAY0 + timedelta(days=4))
    found = await select(dest, query, NOW, concurrency=4)
    assert dest.most == 4
    assert len(dest.listed) == 3 * 5
    serial = await select(dest, query, NOW, concurrency=1)
    assert dest.most == 4
    assert [s.key for s in found.segments] == [s.key for s in serial.segments]
    assert len(found.segments) == 3 * 3 * 2  # hosts x days 1-3 x containers
