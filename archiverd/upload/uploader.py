"""One upload pass: every packed segment, oldest first, to its deterministic key, exactly once.

Per segment the journal first commits 'uploading', then the happy path is one conditional
PUT (``If-None-Match: *``), or for a multipart object Create + one request per part +
Complete: nothing else. The bucket is asked first (HEAD, and an incomplete multipart upload
is looked up to resume) only when the outcome of an earlier PUT is unknown: the segment was
'uploading' when the previous process died, or an earlier attempt of this pass failed, or
the server does not support conditional writes. If an object is there and is this segment
(same body SHA-256, or same plaintext SHA-256 and byte range when it was packed twice), it
is recorded and not sent again; a PUT answered "already exists" (its earlier response was
lost) goes to the same check. So a re-upload after a crash never makes a second version.
Then the journal commits 'uploaded' with the VersionId, and only after that the spool file is
deleted. A segment whose spool file is gone (or is no longer a regular file) is journaled as
lost, counted in ``archiverd_spool_files_lost_total`` and logged; the pass goes on.
Retryable failures are retried through `stamina` (exponential backoff with jitter,
``destination.max_attempts`` / ``retry_timeout_seconds`` / ``backoff_*_seconds``; tests
switch the waits off with `stamina.set_testing`); permanent ones never are. After the last
attempt, or on a failure that concerns the whole destination (access denied, no bucket, KMS),
the pass stops: the data stays in the spool for the next pass.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import stamina
import structlog

from archiverd.clock import Clock, SystemClock
from archiverd.config import Settings
from archiverd.destinations.base import Destination, StoredObject
from archiverd.errors import (
    ArchiverError,
    ObjectExistsError,
    PermanentFailure,
    RetryableDestinationError,
    UnconditionalOnly,
    reason_of,
)
from archiverd.formats.layout import object_key
from archiverd.logs import error_kind
from archiverd.metrics import Metrics
from archiverd.spool.store import remove_spooled, spool_file_problem
from archiverd.upload.queue import PendingSegment, UploadQueue

log = structlog.get_logger("archiverd.upload")

# Failures about the destination as a whole: every other segment would fail the same way.
_STOP_PASS = frozenset({"access_denied", "no_bucket", "kms", "versioning"})


@runtime_checkable
class RecoversIncomplete(Protocol):
    """A destination that can clean up uploads a crash left half-done."""

    async def recover_incomplete(self, prefix: str, keep: Collection[str]) -> int: ...


@runtime_checkable
class ConditionalWrites(Protocol):
    """A destination that says whether its PUTs refuse to replace a live object."""

    @property
    def conditional_writes(self) -> bool: ...


@dataclass
class UploadSummary:
    """Counts from one pass; `errors` holds one message per failed segment."""

    uploaded: int = 0
    skipped_existing: int = 0
    failed: int = 0
    bytes: int = 0
    lost: int = 0
    """Segments given up because their spool file was gone (journaled as lost)."""
    errors: list[str] = field(default_factory=list)


class Uploader:
    """Uploads the journal's packed segments to a destination. One pass at a time."""

    def __init__(
        self,
        destination: Destination,
        journal: UploadQueue,
        metrics: Metrics,
        *,
        settings: Settings,
        clock: Clock | None = None,
        host: str | None = None,
    ) -> None:
        self.schedule = settings.schedule
        self.retry = settings.destination
        self.destination = destination
        self.journal = journal
        self.metrics = metrics
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.host = host if host is not None else socket.gethostname()
        self._lock = asyncio.Lock()
        self._recovered = False

    def oldest_pending_sealed_at(self) -> datetime | None:
        """When the oldest segment not yet uploaded was sealed (None when none)."""
        return self.journal.oldest_pending_sealed_at()

    async def upload_pending(self) -> UploadSummary:
        """Upload every packed segment, oldest first; never raises for a segment's failure."""
        async with self._lock:
            summary = UploadSummary()
            segments = sorted(
                await asyncio.to_thread(self.journal.packed_segments),
                key=lambda s: (s.sealed_at, s.segment_id),
            )
            if not self._recovered and any(s.resuming for s in segments):
                await self._recover(segments)
            started = self.clock.now()
            rate = self.schedule.max_backlog_bytes_per_second
            sent = 0
            for segment in segments:
                stop = await self._one(segment, summary)
                if stop:
                    break
                sent += segment.packed_bytes
                if rate > 0:
                    # Average rate over the pass; the first object goes at once.
                    await self.clock.sleep_until(started + timedelta(seconds=sent / rate))
            self._update_pending_age()
            return summary

    async def _recover(self, segments: list[PendingSegment]) -> None:
        """Once per process, after a crash left segments 'uploading': abort incomplete
        uploads of ours no pending segment will resume."""
        if not isinstance(self.destination, RecoversIncomplete):
            self._recovered = True
            return
        prefix = self.destination.prefix
        hosts = {self.host} | {s.description.host for s in segments}
        keep = {object_key(prefix, s.description) for s in segments}
        try:
            for host in sorted(hosts):
                aborted = await self.destination.recover_incomplete(f"{prefix}{host}/", keep)
                if aborted:
                    log.info("aborted incomplete uploads", host=host, count=aborted)
            self._recovered = True
        except ArchiverError as exc:
            log.warning("could not clean up incomplete uploads; will retry", error=str(exc))

    async def _one(self, segment: PendingSegment, summary: UploadSummary) -> bool:
        """Upload one segment with retries; return True when the pass should stop."""
        key = object_key(self.destination.prefix, segment.description)
        started = self.clock.now()
        if not segment.resuming:
            await asyncio.to_thread(self.journal.mark_uploading, segment.segment_id)
        attempt = 0
        problem = await asyncio.to_thread(spool_file_problem, segment.spool_path)
        if problem is not None:
            await self._lost(segment, key, problem, summary)
            return False
        try:
            async for attempt_cm in self._retrying():
                with attempt_cm:
                    attempt = attempt_cm.num
                    stored, existed = await self._counted_attempt(key, segment, attempt)
        except (ArchiverError, OSError) as exc:
            # The spool file may have vanished while the attempts ran: then only it is lost.
            problem = await asyncio.to_thread(spool_file_problem, segment.spool_path)
            if problem is not None:
                await self._lost(segment, key, problem, summary)
                return False
            self._failed(segment, key, exc, attempt, summary)
            if isinstance(exc, RetryableDestinationError):  # the last attempt failed too
                return True
            return reason_of(exc) in _STOP_PASS
        try:
            await asyncio.to_thread(
                self.journal.mark_uploaded,
                segment.segment_id,
                key=key,
                version_id=stored.version_id,
                sha256_b64=stored.sha256_b64,
            )
        except sqlite3.Error as exc:
            # Stored but not recorded: the spool file stays, and the next pass finds the
            # object by its HEAD and records it. Every other segment would fail alike.
            summary.failed += 1
            summary.errors.append(f"journal: {exc}")
            log.error(
                "upload stored but not recorded; the spool file stays, the next pass records it",
                key=key,
                segment_id=segment.segment_id,
                error=str(exc),
                repeat_key=error_kind(exc),
            )
            return True
        await asyncio.to_thread(remove_spooled, segment.spool_path)
        if existed:
            summary.skipped_existing += 1
        else:
            summary.uploaded += 1
            summary.bytes += stored.size
            self.metrics.upload_bytes.inc(stored.size)
        self.metrics.segments_uploaded.inc()
        now = self.clock.now()
        self.metrics.last_upload_success.set(now.timestamp())
        seconds = max((now - started).total_seconds(), 1e-6)
        log.info(
            "upload",
            outcome="existing" if existed else "uploaded",
            key=key,
            segment_id=segment.segment_id,
            version_id=stored.version_id,
            bytes=stored.size,
            attempts=attempt,
            seconds=round(seconds, 3),
            mib_per_s=round(stored.size / seconds / 2**20, 2),
        )
        return False

    def _retrying(self) -> AsyncIterator[stamina.Attempt]:
        """Attempts at one segment: retryable failures only, waits doubling with jitter,
        at most ``max_attempts`` and ``retry_timeout_seconds`` (permanent ones: one attempt).

        stamina adds up to ``wait_jitter`` to each exponential step: half the initial wait as
        the base and half as jitter puts attempt n's wait in [cap/2, cap], cap = initial*2^(n-1).
        """
        half = self.retry.backoff_initial_seconds / 2
        return stamina.retry_context(
            on=RetryableDestinationError,
            attempts=self.retry.max_attempts,
            timeout=self.retry.retry_timeout_seconds,
            wait_initial=half,
            wait_jitter=half,
            wait_max=self.retry.backoff_max_seconds,
        )

    async def _counted_attempt(
        self, key: str, segment: PendingSegment, attempt: int
    ) -> tuple[StoredObject, bool]:
        """One attempt, with its failure counted by reason (and a retry counted as such)."""
        if attempt > 1:
            self.metrics.upload_retries.inc()
        try:
            return await self._attempt(key, segment, unsure=segment.resuming or attempt > 1)
        except (ArchiverError, OSError) as exc:
            self.metrics.upload_failures.labels(reason=reason_of(exc)).inc()
            if isinstance(exc, RetryableDestinationError) and attempt < self.retry.max_attempts:
                log.info("upload retry", key=key, attempt=attempt, reason=reason_of(exc),
                         error=str(exc))  # fmt: skip
            raise

    async def _attempt(
        self, key: str, segment: PendingSegment, *, unsure: bool
    ) -> tuple[StoredObject, bool]:
        """(HEAD, compare when `unsure` or unconditional,) PUT; (stored object, whether it
        was already there). `unsure`: an earlier PUT of the segment may have stored it."""
        for _ in range(3):  # PUT said "exists" but HEAD disagrees: a racing delete; re-check
            if unsure or not self._conditional():
                existing = await self.destination.head(key)
                if existing is not None:
                    if not _same_segment(existing, segment):
                        raise PermanentFailure(
                            f"s3 key {key!r} already holds a different object (body "
                            f"{existing.sha256_b64}, expected {segment.packed_sha256_b64}); "
                            "segment left in the spool: inspect the object and the journal",
                            "conflict",
                        )
                    await self._forget_incomplete(key)
                    return existing, True
            try:
                stored = await self.destination.put_file(
                    key, segment.spool_path, segment.metadata, segment.packed_sha256_b64,
                    resume=unsure,
                )  # fmt: skip
            except (ObjectExistsError, UnconditionalOnly):
                unsure = True
                continue
            return stored, False
        raise PermanentFailure(f"{key!r}: conditional PUT and HEAD keep disagreeing", "conflict")

    def _conditional(self) -> bool:
        """Whether a PUT refuses to replace a live object (else a HEAD must come first)."""
        return (
            isinstance(self.destination, ConditionalWrites) and self.destination.conditional_writes
        )

    async def _forget_incomplete(self, key: str) -> None:
        """The object is there: an incomplete upload of the same key would only leak."""
        if isinstance(self.destination, RecoversIncomplete):
            await self.destination.recover_incomplete(key, ())

    def _failed(
        self,
        segment: PendingSegment,
        key: str,
        exc: BaseException,
        attempts: int,
        summary: UploadSummary,
    ) -> None:
        summary.failed += 1
        summary.errors.append(str(exc))
        log.error(
            "upload failed; segment stays in the spool",
            key=key,
            segment_id=segment.segment_id,
            reason=reason_of(exc),
            attempts=attempts,
            error=str(exc),
        )

    async def _lost(
        self, segment: PendingSegment, key: str, problem: str, summary: UploadSummary
    ) -> None:
        """The body is gone: journal the segment as lost (a hole `verify` will show) and let
        the pass go on with the others."""
        reason = f"{problem} ({segment.spool_path})"
        await asyncio.to_thread(self.journal.mark_lost, segment.segment_id, reason)
        self.metrics.spool_files_lost.inc()
        summary.lost += 1
        summary.errors.append(f"segment {segment.segment_id} ({key}) lost: {reason}")
        log.error(
            "segment lost: its spool file is gone; uploading the others",
            key=key,
            segment_id=segment.segment_id,
            error=reason,
        )

    def _update_pending_age(self) -> None:
        oldest = self.journal.oldest_pending_sealed_at()
        age = (self.clock.now() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest_pending_age.set(max(0.0, age))


def _same_segment(stored: StoredObject, segment: PendingSegment) -> bool:
    """The stored object is this segment: same body, or the same plaintext packed again."""
    if stored.sha256_b64 and stored.sha256_b64 == segment.packed_sha256_b64:
        return True
    names = ("archiverd-plaintext-sha256", "archiverd-range")
    ours = [segment.metadata.get(name) for name in names]
    return all(ours) and ours == [stored.metadata.get(name) for name in names]
