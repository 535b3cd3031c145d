"""Packing sealed segments into the spool, and the spool's back-pressure state (the
`Collector`'s worker-thread side of packing).

Each sealed segment is packed into the spool and committed as packed in the journal; a segment
whose source bytes are gone is marked lost. Back-pressure: while the spool holds
``state.spool_max_bytes`` or more (or the disk is full), `spool_full` is set, the metric
``archiverd_spool_full`` is 1 and no new segment is sealed; sealed data is never dropped and
reading resumes where it stopped.
"""

from __future__ import annotations

import errno
import time

import structlog

from archiverd.collect.dirty import Key
from archiverd.collect.files import RangeReader, as_binary
from archiverd.collect.tail import StreamTail
from archiverd.config import Settings
from archiverd.errors import SourceError
from archiverd.journal.db import Journal, SegmentRow
from archiverd.logs import error_kind
from archiverd.metrics import Metrics
from archiverd.pack import Keyring
from archiverd.spool.store import Spool, pack_segment

log = structlog.get_logger("archiverd.collect.packing")


class SpoolFeeder:
    """Pack sealed segments and track whether the spool is full; the attributes below are
    set by the `Collector`'s constructor. Packing runs on worker threads, one per stream."""

    settings: Settings
    journal: Journal
    keyring: Keyring
    metrics: Metrics
    spool: Spool
    spool_full: bool
    packed_total: int
    _tails: dict[Key, StreamTail]
    _disk_full: bool

    @property
    def disk_full(self) -> bool:
        """The last spool write failed for lack of disk space (not for the spool limit)."""
        return self._disk_full

    def _bad(self, reason: str) -> None:
        self.metrics.bad_input.labels(reason=reason).inc()

    def _update_spool_state(self) -> None:
        used, objects = self.journal.spool_usage()
        self.metrics.spool_bytes.set(used)
        self.metrics.spool_objects.set(objects)
        full = self._disk_full or used >= self.spool.max_bytes
        if full != self.spool_full:
            if full:
                log.warning(
                    "spool full: not sealing new segments until uploads free space",
                    spool_bytes=used,
                    limit=self.spool.max_bytes,
                    disk_full=self._disk_full,
                )
            else:
                log.info("spool has room again; sealing resumes", spool_bytes=used)
        self.spool_full = full
        self.metrics.spool_full.set(1 if full else 0)

    def _pack_work(self, key: Key) -> None:
        tail = self._tails.get(key)
        if tail is None:
            return
        while True:
            sealed = self.journal.segments(tail.stream_id, "sealed")
            if not sealed:
                break
            for segment in sealed:
                if not self._pack(tail, segment):
                    self._update_spool_state()
                    return
            self._update_spool_state()

    def _pack(self, tail: StreamTail, segment: SegmentRow) -> bool:
        """Pack one sealed segment into the spool and commit it as packed."""
        assert segment.end_offset is not None
        assert segment.description is not None
        started = time.monotonic()
        try:
            result = pack_segment(
                self.spool,
                self.journal,
                self.keyring,
                as_binary(RangeReader(tail.spans(), segment.start_offset, segment.end_offset)),
                segment,
                level=self.settings.encryption.compression_level,
            )
        except SourceError as exc:
            self.journal.mark_lost(segment.id, str(exc))
            self._bad("vanished")
            log.error("segment lost: its source bytes are gone", segment=segment.id, error=str(exc))
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._disk_full = True
            self._update_spool_state()
            log.error(
                "cannot write to the spool; will retry",
                segment=segment.id,
                error=str(exc),
                repeat_key=error_kind(exc),
            )
            return False
        self._disk_full = False
        self.packed_total += 1
        self.metrics.segments_packed.inc()
        self.metrics.pack_plaintext_bytes.inc(result.plaintext_bytes)
        self.metrics.pack_seconds.inc(time.monotonic() - started)
        log.info(
            "segment packed",
            container=segment.description["container_id"],
            seq=segment.seq,
            bytes=result.plaintext_bytes,
            packed=result.packed_bytes,
        )
        return True
