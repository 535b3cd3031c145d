"""Packing sealed segments into the spool, and the spool's back-pressure state (the
`Collector`'s worker-thread side of packing).

Each sealed segment is packed into the spool and committed as packed in the journal; a segment
whose source bytes are gone is marked lost. With worker processes, a finished stream's last
segment is packed *ahead*, while it is still being scanned (`SpoolFeeder.pack_ahead`), and
published once sealed if the seal ended where the packing did. Back-pressure: while the spool holds
``state.spool_max_bytes`` or more (or the disk is full), `spool_full` is set, the metric
``archiverd_spool_full`` is 1 and no new segment is sealed; sealed data is never dropped and
reading resumes where it stopped.
"""

from __future__ import annotations

import errno
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog

from archiverd.collect.files import RangeReader, as_binary
from archiverd.collect.tail import BULK_BYTES, StreamTail
from archiverd.collect.workers import WorkerPool
from archiverd.config import Settings
from archiverd.errors import SourceError
from archiverd.journal.db import Journal, SegmentRow
from archiverd.logs import error_kind
from archiverd.metrics import Metrics
from archiverd.pack import Keyring, PackResult
from archiverd.pack.stream import object_key
from archiverd.spool.store import Spool, pack_segment

log = structlog.get_logger("archiverd.collect.packing")


class SpoolFeeder:
    """Packs sealed segments and tracks whether the spool is full; owned by the
    `Collector`. Packing runs on worker threads, one per stream, each handing its segment to
    a worker process when there is a `pool`."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        keyring: Keyring,
        metrics: Metrics,
        spool: Spool,
        pool: WorkerPool | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        """Worker processes to pack in (None: pack on the calling thread)."""
        self.journal = journal
        self.keyring = keyring
        self.metrics = metrics
        self.spool = spool
        self.spool_full = False
        self.packed_total = 0
        self._disk_full = False
        self._ahead: dict[int, _Ahead] = {}  # by segment id
        self._ahead_lock = threading.Lock()

    @property
    def disk_full(self) -> bool:
        """The last spool write failed for lack of disk space (not for the spool limit)."""
        return self._disk_full

    def update_spool_state(self) -> None:
        """Re-read the spool's usage: metrics, and `spool_full` (logged when it changes)."""
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

    def pack_sealed(self, tail: StreamTail) -> None:
        """Pack every sealed segment of `tail`'s stream, oldest first; stops at a spool
        write failure (retried on a later pass)."""
        while True:
            sealed = self.journal.segments(tail.stream_id, "sealed")
            if not sealed:
                break
            for segment in sealed:
                if not self._pack(tail, segment):
                    self.update_spool_state()
                    return
            self.update_spool_state()

    def pack_ahead(self, tail: StreamTail) -> None:
        """Start packing `tail`'s open segment now, up to the end of the data, on a worker
        process, while the stream is scanned to be sealed there (it finished: it seals
        everything it reads). Only when that range is one segment (at least BULK_BYTES, at
        most ``max_segment_bytes``, in plain files whose places are known). The body waits in
        an ahead temp file; `_pack` publishes it if the sealed segment is exactly that range
        and drops it otherwise. A failure costs nothing but the time: the sealed segment is
        then packed as usual."""
        pool, segment = self.pool, tail.open_segment
        end = tail.files.data_end()
        if pool is None or self.spool_full or end is None:
            return
        if not BULK_BYTES <= end - segment.start_offset <= self.settings.rotation.max_segment_bytes:
            return
        with self._ahead_lock:
            if segment.id in self._ahead:
                return
            ahead = self._ahead[segment.id] = _Ahead(segment.start_offset, end)
        spans, level = tail.spans(), self.settings.encryption.compression_level

        def produce(dst: BinaryIO) -> PackResult | None:
            return pool.pack(
                spans, ahead.start, ahead.end, dst, object_key(self.keyring), level=level
            )

        def run() -> None:
            try:
                temp, result = self.spool.write_temp(segment.id, produce, ahead=True)
                if result is None:  # no worker could: packed after the seal
                    temp.unlink(missing_ok=True)
                else:
                    ahead.ready = (temp, result)
            except Exception as exc:  # any failure: packed after the seal instead
                log.info("packing ahead failed; packing after the seal", error=str(exc))
            finally:
                ahead.done.set()

        threading.Thread(target=run, name=f"archiverd-ahead-{segment.id}", daemon=True).start()

    def close(self) -> None:
        """Wait for packing ahead to stop; drop bodies whose segment was never sealed."""
        with self._ahead_lock:
            left, self._ahead = list(self._ahead.values()), {}
        for ahead in left:
            ahead.drop()

    def _take_ahead(self, segment: SegmentRow) -> tuple[Path, PackResult] | None:
        """The body packed ahead for `segment`, if it is exactly its range (else dropped)."""
        with self._ahead_lock:
            ahead = self._ahead.pop(segment.id, None)
        if ahead is None:
            return None
        ahead.done.wait()
        if ahead.ready is None or (ahead.start, ahead.end) != (
            segment.start_offset,
            segment.end_offset,
        ):
            ahead.drop()
            return None
        return ahead.ready

    def _lost(self, tail: StreamTail, segment: SegmentRow, error: str) -> None:
        """The segment's source bytes are gone: mark it lost and have the stream's next
        segment record the gap."""
        assert segment.end_offset is not None
        assert segment.description is not None
        n = segment.end_offset - segment.start_offset
        self.journal.add_lost(
            tail.stream_id,
            {
                "bytes": n,
                "after_ts": segment.description.get("first_ts"),
                "before_ts": segment.description.get("last_ts"),
                "reason": "source_gone_before_pack",
            },
        )
        self.journal.mark_lost(segment.id, error)
        self.metrics.bad_input.labels(reason="vanished").inc()
        self.metrics.source_gaps.labels(reason="source_gone_before_pack").inc()
        self.metrics.source_lost_bytes.inc(n)
        log.error("segment lost: its source bytes are gone", segment=segment.id, error=error)

    def _pack(self, tail: StreamTail, segment: SegmentRow) -> bool:
        """Pack one sealed segment into the spool and commit it as packed."""
        assert segment.end_offset is not None
        assert segment.description is not None
        started = time.monotonic()
        spans, start, end = tail.spans(), segment.start_offset, segment.end_offset
        level = self.settings.encryption.compression_level
        in_worker = None
        if self.pool is not None:
            in_worker = functools.partial(self.pool.pack, spans, start, end, level=level)
        ready = self._take_ahead(segment)
        try:
            result = pack_segment(
                self.spool,
                self.journal,
                self.keyring,
                as_binary(RangeReader(spans, start, end)),
                segment,
                level=level,
                elsewhere=in_worker,
                ready=ready,
            )
        except SourceError as exc:
            self._lost(tail, segment, str(exc))
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._disk_full = True
            self.update_spool_state()
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
            ahead=ready is not None,
        )
        return True


@dataclass
class _Ahead:
    """A segment body being packed ahead of its seal (`SpoolFeeder.pack_ahead`)."""

    start: int
    end: int
    done: threading.Event = field(default_factory=threading.Event)
    ready: tuple[Path, PackResult] | None = None
    """The temp file and its result, once packed."""

    def drop(self) -> None:
        """Wait for the packing to end, then remove its body."""
        self.done.wait()
        if self.ready is not None:
            self.ready[0].unlink(missing_ok=True)
