"""Prometheus metrics, one `Metrics` (with its own registry) per daemon.

Every pipeline stage receives the `Metrics` it reports to in its constructor; tests make a
fresh one each, so nothing is global. Names are prefixed ``archiverd_``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from archiverd import __version__


class Metrics:
    """The daemon's metrics, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("archiverd_build", "archiverd version", registry=r)
        self.build_info.info({"version": __version__})
        # discover / tail
        self.source_bytes_read = Counter(
            "archiverd_source_bytes_read", "Log bytes read from sources", ["source"], registry=r
        )
        self.watched_files = Gauge("archiverd_watched_files", "Log files held open", registry=r)
        self.source_bytes_freed = Counter(
            "archiverd_source_bytes_freed",
            "Bytes of source files deleted once archived (directory delete_after_upload)",
            ["source"],
            registry=r,
        )
        self.source_files_deleted = Counter(
            "archiverd_source_files_deleted",
            "Source files deleted once archived (directory delete_after_upload)",
            ["source"],
            registry=r,
        )
        self.bad_input = Counter(
            "archiverd_bad_input",
            "Input skipped or worked around (reason: malformed_json, long_line, binary, "
            "symlink_outside_root, permission_denied, truncated, vanished)",
            ["reason"],
            registry=r,
        )
        self.source_gaps = Counter(
            "archiverd_source_gaps",
            "Ranges of source bytes that vanished before archiverd could read them, recorded "
            "as 'lost' in the next segment (reason: rotated_unread, rotated_before_seen, "
            "vanished_while_down, source_gone_before_pack)",
            ["reason"],
            registry=r,
        )
        self.source_lost_bytes = Counter(
            "archiverd_source_lost_bytes",
            "Bytes known lost at the source (gaps of unknown size count 0 here)",
            registry=r,
        )
        # seal / pack / spool
        self.segments_sealed = Counter(
            "archiverd_segments_sealed",
            "Segments sealed (reason: size, exit, finished, once, age, truncated)",
            ["reason"],
            registry=r,
        )
        self.segments_packed = Counter(
            "archiverd_segments_packed", "Segments packed into the spool", registry=r
        )
        self.pack_plaintext_bytes = Counter(
            "archiverd_pack_plaintext_bytes", "Plaintext bytes packed", registry=r
        )
        self.pack_seconds = Counter(
            "archiverd_pack_seconds",
            "Wall time spent packing (throughput = bytes/seconds)",
            registry=r,
        )
        self.spool_bytes = Gauge("archiverd_spool_bytes", "Bytes waiting in the spool", registry=r)
        self.spool_objects = Gauge(
            "archiverd_spool_objects", "Objects waiting in the spool", registry=r
        )
        self.spool_full = Gauge(
            "archiverd_spool_full", "1 while the spool limit stops sealing", registry=r
        )
        self.spool_files_lost = Counter(
            "archiverd_spool_files_lost",
            "Packed segments given up because their spool file was gone (journaled as lost)",
            registry=r,
        )
        # upload / record
        self.segments_uploaded = Counter(
            "archiverd_segments_uploaded", "Segments confirmed in the destination", registry=r
        )
        self.upload_bytes = Counter("archiverd_upload_bytes", "Packed bytes uploaded", registry=r)
        self.upload_failures = Counter(
            "archiverd_upload_failures",
            "Failed upload attempts (reason: throttled, server_error, network, timeout, "
            "truncated, access_denied, no_bucket, versioning, kms, other)",
            ["reason"],
            registry=r,
        )
        self.upload_retries = Counter(
            "archiverd_upload_retries", "Upload attempts retried after a failure", registry=r
        )
        self.last_upload_success = Gauge(
            "archiverd_last_upload_success_timestamp_seconds",
            "Unix time of the last confirmed upload",
            registry=r,
        )
        self.archive_lag = Gauge(
            "archiverd_archive_lag_seconds",
            "Age of the oldest byte read but not yet in the bucket (0 when none)",
            registry=r,
        )
        self.archive_lag_limit = Gauge(
            "archiverd_archive_lag_limit_seconds",
            "The archive lag /readyz accepts (schedule.max_archive_lag_seconds; 0: no check)",
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "archiverd_oldest_pending_segment_age_seconds",
            "Age of the oldest sealed segment not yet uploaded (0 when none)",
            registry=r,
        )
