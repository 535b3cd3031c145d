"""Destinations: where packed objects are stored (``s3://`` or ``file://``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from archiverd.config import Settings

if TYPE_CHECKING:
    from archiverd.destinations.filesystem import FileDestination
    from archiverd.destinations.s3 import S3Destination


def open_destination(settings: Settings) -> S3Destination | FileDestination:
    """The destination `settings.destination_url` names: a plain object, not yet connected.

    It connects lazily on first use; the caller must `await destination.close()` (both kinds
    also work as ``async with``-free plain objects; `S3Destination` is an async context
    manager too). Raises `ConfigError` for unusable URLs or credential settings.
    """
    url = settings.destination_url
    if url.startswith("s3://"):
        from archiverd.destinations.s3 import S3Destination

        return S3Destination(url, settings.destination, host=settings.host_name)
    from archiverd.destinations.filesystem import FileDestination
    from archiverd.errors import ConfigError

    if settings.destination.object_lock_mode:
        raise ConfigError(
            f"destination.object_lock_mode needs an s3:// destination with Object Lock, not "
            f"{url}: set destination.url to such a bucket or unset object_lock_mode"
        )
    return FileDestination(url)
