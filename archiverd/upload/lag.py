"""The archive lag: how long the oldest byte read but not yet in the bucket has waited.

Its bound (ARCHITECTURE invariant 7) is ``rotation.max_segment_age_seconds`` + the longest
interval between scheduled uploads + the splay: an open segment is sealed at the first upload
after its oldest byte is ``max_segment_age_seconds`` old, and uploaded in the same pass.
``archiverd_archive_lag_seconds`` exports it, ``/readyz`` compares it with
``schedule.max_archive_lag_seconds`` (0: the bound plus `ARCHIVE_LAG_GRACE_SECONDS`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from archiverd.config import ARCHIVE_LAG_GRACE_SECONDS, Settings
from archiverd.upload.schedule import UploadSchedule


class PendingJournal(Protocol):
    """Where sealed and packed, not yet uploaded, segments are recorded."""

    def oldest_unuploaded_at(self) -> datetime | None: ...


class OpenSegments(Protocol):
    """Where bytes read but not yet sealed are held."""

    def oldest_unsealed(self) -> datetime | None: ...


def lag_bound(settings: Settings) -> timedelta | None:
    """max_segment_age + longest upload interval + splay; None when age sealing is off."""
    age = settings.rotation.max_segment_age_seconds
    if age <= 0:
        return None
    schedule = UploadSchedule(settings.schedule, "")  # the gaps do not depend on the splay
    splay = timedelta(seconds=settings.schedule.splay_seconds)
    return timedelta(seconds=age) + schedule.longest_interval() + splay


def lag_limit(settings: Settings) -> timedelta | None:
    """The lag /readyz accepts: the configured one, else the bound plus a grace; None: off."""
    if settings.schedule.max_archive_lag_seconds > 0:
        return timedelta(seconds=settings.schedule.max_archive_lag_seconds)
    bound = lag_bound(settings)
    return bound + timedelta(seconds=ARCHIVE_LAG_GRACE_SECONDS) if bound is not None else None


def oldest_unarchived(journal: PendingJournal, collector: OpenSegments) -> datetime | None:
    """When the oldest byte read but not yet uploaded was written (None: all uploaded).

    Call it off the event loop: it queries the journal.
    """
    times = [t for t in (journal.oldest_unuploaded_at(), collector.oldest_unsealed()) if t]
    return min(times, default=None)


def archive_lag(now: datetime, oldest: datetime | None) -> float:
    """Seconds since `oldest` (0 when nothing waits)."""
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
