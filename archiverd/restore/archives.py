"""Reading several buckets as one: the destination plus ``restore.archives``, or ``--url``.

After a switch to a fresh bucket, the older ones stay readable: `ls`, `get` and `verify`
list each bucket (the destination first, then the archives in their configured order),
and a segment found in two buckets (the same key below each bucket's prefix) is shown once,
from the first bucket that has it. `Archives` then routes each selected key's HEAD and GET
to the bucket it came from.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from archiverd.config import DestinationSettings, Settings
from archiverd.destinations.base import Destination, StoredObject
from archiverd.errors import ConfigError
from archiverd.restore.listing import Selection, select
from archiverd.restore.query import Query


def reader_settings(settings: Settings, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(url, DestinationSettings) of every bucket to read, in order of preference."""
    base = settings.destination.model_copy(update={"object_lock_mode": "", "object_lock_days": 0})
    url = getattr(args, "url", None)
    if url:
        checked = DestinationSettings(url=url)  # validates the scheme
        update = {"url": checked.url, "endpoint_url": args.endpoint_url or ""}
        if args.region:
            update["region"] = args.region
        return [(checked.url, base.model_copy(update=update))]
    if getattr(args, "endpoint_url", None) or getattr(args, "region", None):
        raise ConfigError("--endpoint-url and --region only apply with --url")
    found = [(settings.destination_url, base)]
    for archive in settings.restore.archives:
        update = {
            "url": archive.url,
            "endpoint_url": archive.endpoint_url,
            "region": archive.region,
            "addressing_style": archive.addressing_style,
        }
        found.append((archive.url, base.model_copy(update=update)))
    return found


def open_reader(url: str, settings: DestinationSettings) -> Destination:
    """A destination object for reading `url` (connects lazily)."""
    if url.startswith("s3://"):
        from archiverd.destinations.s3 import S3Destination

        return S3Destination(url, settings)
    from archiverd.destinations.filesystem import FileDestination

    return FileDestination(url)


@dataclass
class Archives:
    """Several buckets read as one; see the module docstring."""

    destinations: list[Destination]
    _routes: dict[str, Destination] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, args: argparse.Namespace) -> Archives:
        """The buckets `args` (``--url``) or `settings` name; close with `close()`."""
        return cls([open_reader(url, s) for url, s in reader_settings(settings, args)])

    async def select(self, query: Query, now: datetime, **options: Any) -> Selection:
        """`listing.select` over every bucket, merged in time order, duplicates dropped."""
        segments = []
        deleted = 0
        seen: set[str] = set()
        for index, destination in enumerate(self.destinations):
            found = await select(destination, query, now, **options)
            relative = {s.key: s.key[len(destination.prefix) :] for s in found.segments}
            fresh = [s for s in found.segments if relative[s.key] not in seen]
            seen.update(relative.values())
            for segment in fresh:
                self._routes.setdefault(segment.key, destination)
            segments += [replace(s, origin=index) for s in fresh]
            deleted += found.deleted
        segments.sort(key=lambda s: s.order)
        return Selection(segments, deleted)

    def url_of(self, origin: int) -> str:
        """The URL of bucket number `origin` (0 is the destination, or ``--url``)."""
        return self.destinations[origin].url

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """HEAD in the bucket `key` was selected from."""
        return await self.route(key).head(key, version_id)

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        """GET from the bucket `key` was selected from."""
        return await self.route(key).download(key, destination, version_id)

    def route(self, key: str) -> Destination:
        """The bucket `key` was selected from."""
        return self._routes.get(key, self.destinations[0])

    async def close(self) -> None:
        """Close every bucket's connections."""
        for destination in self.destinations:
            await destination.close()
