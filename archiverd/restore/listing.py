"""Find the segments a `Query` selects, listing only the partitions it needs.

Hosts come from a delimiter listing when the destination offers one (`PrefixLister`);
otherwise, and only when ``--host`` is absent, the whole prefix is listed once. Metadata
(container names, labels) is fetched with one HEAD per key, only when a filter needs it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from archiverd.destinations.base import Destination, ObjectVersion, StoredObject
from archiverd.errors import NoMatchError
from archiverd.formats.layout import ParsedKey, parse_key
from archiverd.restore.query import Query, container_name, labels_of, plan_days, plan_prefixes

_T = TypeVar("_T")


class ObjectReader(Protocol):
    """What restoring needs of a bucket once segments are selected."""

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The latest (or given) version of `key`, or None."""
        ...

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        """Write the object's body to `destination`; return its metadata."""
        ...


@runtime_checkable
class PrefixLister(Protocol):
    """Optional destination capability: common prefixes one level below `prefix`."""

    def list_prefixes(self, prefix: str) -> AsyncIterator[str]:
        """Yield full prefixes ending in '/' (an S3 ``Delimiter='/'`` listing)."""
        ...


@dataclass(frozen=True)
class Segment:
    """One listed object version (or delete marker) of an archived segment."""

    key: str
    parsed: ParsedKey
    version_id: str
    size: int
    last_modified: datetime
    is_latest: bool = True
    is_delete_marker: bool = False
    metadata: Mapping[str, str] | None = None
    recovered: bool = False
    """The newest live version of a key whose latest version is a delete marker."""
    origin: int = 0
    """Which bucket it was listed in (0: the destination or ``--url``; then the archives)."""

    @property
    def order(self) -> tuple[datetime, str, str, int, int]:
        """Time order: first record, host, container, seq; newest version first."""
        stamp = -self.last_modified.timestamp()
        return (
            self.parsed.first_ts,
            self.parsed.host,
            self.parsed.container_id,
            self.parsed.seq,
            int(stamp * 1_000_000),
        )


@dataclass(frozen=True)
class Selection:
    """What `select` found; `deleted` counts matching keys whose latest is a delete marker
    (and that still have a live older version, which ``recover_deleted`` selects)."""

    segments: list[Segment]
    deleted: int = 0


async def discover_hosts(destination: Destination) -> list[str] | None:
    """Host names under the destination prefix; None when the destination cannot tell cheaply."""
    lister: object = destination  # fakes and older destinations may lack list_prefixes
    if not isinstance(lister, PrefixLister):
        return None
    hosts = []
    async for sub in lister.list_prefixes(destination.prefix):
        name = sub[len(destination.prefix) :].rstrip("/")
        if name:
            hosts.append(name)
    return sorted(hosts)


async def select(
    destination: Destination,
    query: Query,
    now: datetime,
    *,
    versions: bool = False,
    with_metadata: bool = False,
    recover_deleted: bool = False,
    concurrency: int = 8,
) -> Selection:
    """The segments matching `query`, in time order.

    ``versions``: every version and delete marker (the newest live version under a latest
    delete marker flagged `recovered`), else the latest live version of each key, plus with
    ``recover_deleted`` the newest live version of each deleted key (flagged `recovered`).
    ``with_metadata``: HEAD each kept version (for `ls --long` and naming `get` outputs).
    """
    every = await _list(destination, query, now, concurrency)
    entries = mark_recoverable(every) if versions else latest_or_recovered(every)
    if query.container and query.container_may_be_id:
        by_id = [s for s in entries if s.parsed.container_id.startswith(query.container)]
        if by_id:
            entries, name_filter = by_id, False
        else:
            name_filter = True
    else:
        name_filter = bool(query.container)
    if name_filter or query.needs_metadata:
        entries = await _filter_by_metadata(destination, query, entries, name_filter, concurrency)
    deleted = len({s.key for s in entries if s.recovered})
    if not versions and not recover_deleted:
        entries = [s for s in entries if not s.recovered]
    if with_metadata:
        entries = await fill_metadata(destination, entries, concurrency)
    entries.sort(key=lambda s: s.order)
    return Selection(entries, deleted)


def latest_or_recovered(every: Sequence[Segment]) -> list[Segment]:
    """Per key: the latest version if live, else its newest live version flagged `recovered`
    (nothing for a key with no live version left)."""
    out: list[Segment] = []
    for versions in _by_key(every).values():
        latest = next((v for v in versions if v.is_latest), versions[0])
        if not latest.is_delete_marker:
            out.append(latest)
            continue
        live = [v for v in versions if not v.is_delete_marker]
        if live:
            out.append(replace(max(live, key=lambda v: v.last_modified), recovered=True))
    return out


def mark_recoverable(every: Sequence[Segment]) -> list[Segment]:
    """Every version, the one `latest_or_recovered` would pick for a deleted key flagged."""
    picked = {(s.key, s.version_id) for s in latest_or_recovered(every) if s.recovered}
    return [replace(s, recovered=(s.key, s.version_id) in picked) for s in every]


def _by_key(every: Sequence[Segment]) -> dict[str, list[Segment]]:
    groups: dict[str, list[Segment]] = {}
    for segment in every:
        groups.setdefault(segment.key, []).append(segment)
    return groups


async def _list(
    destination: Destination, query: Query, now: datetime, concurrency: int = 8
) -> list[Segment]:
    """Every version and delete marker under the partitions `query` needs, partitions listed
    `concurrency` at a time (a fleet-wide query has a few per host), in partition order."""
    hosts = [query.host] if query.host else await discover_hosts(destination)
    days = plan_days(query.since, query.until, now, query.lookback)
    prefixes = (
        plan_prefixes(destination.prefix, hosts, days)
        if hosts is not None
        else [destination.prefix]
    )

    async def partition(prefix: str) -> list[Segment]:
        found = []
        async for item in destination.list_versions(prefix):
            segment = _segment(destination.prefix, item)
            if segment is not None and query.key_matches(segment.parsed):
                found.append(segment)
        return found

    parts = await bounded_gather([partition(prefix) for prefix in prefixes], concurrency)
    return [segment for part in parts for segment in part]


def _segment(prefix: str, item: ObjectVersion) -> Segment | None:
    parsed = parse_key(prefix, item.key)
    if parsed is None:
        return None
    return Segment(
        key=item.key,
        parsed=parsed,
        version_id=item.version_id,
        size=item.size,
        last_modified=item.last_modified,
        is_latest=item.is_latest,
        is_delete_marker=item.is_delete_marker,
    )


async def _filter_by_metadata(
    destination: Destination,
    query: Query,
    entries: list[Segment],
    name_filter: bool,
    concurrency: int,
) -> list[Segment]:
    """Keep keys whose metadata matches.

    A container's name and labels are the same in all its segments but for a rename, so
    each (host, container id) costs two HEADs, of its first and last key in the window; only
    when those disagree is every key of it HEADed (all versions of a key share a container).
    A fleet-wide name filter costs a few requests per container instead of one per object.
    """
    live: dict[str, Segment] = {}
    for segment in entries:
        if not segment.is_delete_marker and (segment.key not in live or segment.is_latest):
            live[segment.key] = segment
    groups: dict[tuple[str, str], list[Segment]] = {}
    for segment in sorted(live.values(), key=lambda s: s.order):
        groups.setdefault((segment.parsed.host, segment.parsed.container_id), []).append(segment)

    async def decide(segment: Segment) -> tuple[str, Mapping[str, str] | None]:
        stored = await destination.head(segment.key, segment.version_id or None)
        return segment.key, None if stored is None else stored.metadata

    def facts(metadata: Mapping[str, str] | None) -> object:
        return None if metadata is None else (container_name(metadata), labels_of(metadata))

    ends = {s.key: s for group in groups.values() for s in (group[0], group[-1])}
    heads = dict(await bounded_gather([decide(s) for s in ends.values()], concurrency))
    mixed = [
        s
        for group in groups.values()
        if facts(heads[group[0].key]) != facts(heads[group[-1].key])
        for s in group[1:-1]
    ]
    heads.update(await bounded_gather([decide(s) for s in mixed], concurrency))
    decided = {
        s.key: heads.get(s.key, heads[group[0].key]) for group in groups.values() for s in group
    }
    kept: list[Segment] = []
    for segment in entries:
        metadata = decided.get(segment.key)
        if metadata is None:
            continue
        if name_filter and not query.name_matches(metadata):
            continue
        if not query.metadata_matches(metadata):
            continue
        headed = segment.key in heads and live[segment.key].version_id == segment.version_id
        kept.append(replace(segment, metadata=metadata if headed else None))
    return kept


async def fill_metadata(
    destination: ObjectReader, entries: Sequence[Segment], concurrency: int = 8
) -> list[Segment]:
    """The same entries, each live version with its metadata (one HEAD where missing)."""

    async def fill(segment: Segment) -> Segment:
        if segment.metadata is not None or segment.is_delete_marker:
            return segment
        stored = await destination.head(segment.key, segment.version_id or None)
        return replace(segment, metadata={} if stored is None else dict(stored.metadata))

    return await bounded_gather([fill(s) for s in entries], concurrency)


async def bounded_gather(calls: Sequence[Awaitable[_T]], concurrency: int) -> list[_T]:
    """Await all `calls`, at most `concurrency` at once, results in order.

    The first exception cancels the rest and is raised as itself (not an ExceptionGroup).
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def run(call: Awaitable[_T]) -> _T:
        async with gate:
            return await call

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(call)) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    finally:
        # Calls that never started (cancelled while queued) are closed, not leaked.
        for call in calls:
            if inspect.iscoroutine(call) and inspect.getcoroutinestate(call) == "CORO_CREATED":
                call.close()
    return [task.result() for task in tasks]


def find_version(selection: Selection, version_id: str) -> Segment:
    """The one listed entry with `version_id`; `NoMatchError` when absent or a delete marker."""
    for segment in selection.segments:
        if segment.version_id == version_id:
            if segment.is_delete_marker:
                raise NoMatchError(
                    f"version {version_id} of {segment.key} is a delete marker (the object was "
                    "deleted): pick an earlier version from `archiverd ls --versions`"
                )
            return segment
    raise NoMatchError(
        f"no version {version_id} among {len({s.key for s in selection.segments})} matching "
        "key(s): list them with `archiverd ls --versions` and the same filters"
    )
