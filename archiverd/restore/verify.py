"""`archiverd verify`: prove the selected archive complete, writing no plaintext anywhere.

Every matching object (every version with ``--versions``) is authenticated, decrypted and
gunzipped into a hash as it downloads (`archiverd.restore.streaming`; from a bucket that
cannot stream, after a download to a private temp dir, ciphertext only), in worker threads
(one per core by default: inflate, AES-GCM and SHA-256 release the GIL), and its plaintext
SHA-256 compared with its metadata. The current view of each key (latest live version, or
the newest live version under a delete marker) is then checked for continuity
(`archiverd.restore.continuity`). The summary is per host and UTC day; the exit status is 0
when all is well, 65 on any failed object, hole or broken link, and 66 when the only finding
is bytes lost at the source (recorded at ingest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from archiverd import startup
from archiverd.config import Settings
from archiverd.errors import ArchiverError, ConfigError, EnvelopeMismatchError, OutputError
from archiverd.formats.layout import losses_of
from archiverd.fsutil import no_room
from archiverd.restore.archives import Archives
from archiverd.restore.continuity import StreamReport, check_streams
from archiverd.restore.fetch import DOWNLOAD_ATTEMPTS, check_identity, read_segment, temp_dir
from archiverd.restore.listing import ObjectReader, Segment, bounded_gather, latest_or_recovered
from archiverd.restore.output import Progress, human_bytes

if TYPE_CHECKING:
    from archiverd.pack import Keyring

EXIT_PROBLEM = os.EX_DATAERR
EXIT_LOST_AT_SOURCE = os.EX_NOINPUT


@dataclass
class DayRow:
    """One line of the summary: one host's objects of one UTC day."""

    host: str
    day: str
    objects: int = 0
    bytes: int = 0
    failed: int = 0
    streams: dict[str, int] = field(default_factory=dict)
    lost_bytes: int = 0
    losses: int = 0

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "host": self.host,
            "day": self.day,
            "objects": self.objects,
            "bytes": self.bytes,
            "failed": self.failed,
            "streams": dict(sorted(self.streams.items())),
            "losses_at_source": self.losses,
            "lost_bytes": self.lost_bytes,
        }


@dataclass
class Verdict:
    """Everything `verify` found."""

    rows: list[DayRow]
    failures: list[tuple[Segment, ArchiverError]]
    streams: list[StreamReport]
    recovered: list[Segment] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Failed objects, holes and broken links, one message each."""
        out = [f"{s.key} (version {s.version_id}): {exc}" for s, exc in self.failures]
        for report in self.streams:
            out += [f.message for f in report.findings if f.kind in ("gap", "broken")]
        return out

    @property
    def losses(self) -> list[str]:
        """Bytes lost at source, one message each."""
        return [f.message for r in self.streams for f in r.losses]

    @property
    def notes(self) -> list[str]:
        """Not problems, worth knowing: deleted segments verified from an older version, and
        streams without an end-of-stream mark."""
        out = [
            f"{s.key} was deleted (its latest version is a delete marker): verified its "
            f"newest live version {s.version_id}"
            for s in self.recovered
        ]
        return out + [f.message for r in self.streams for f in r.findings if f.kind == "open"]

    @property
    def exit_code(self) -> int:
        """0 all well; 65 any problem in the bucket; 66 only losses at source."""
        if self.problems:
            return EXIT_PROBLEM
        return EXIT_LOST_AT_SOURCE if self.losses else 0

    def as_json(self) -> dict[str, Any]:
        """The whole verdict, JSON-ready."""
        return {
            "ok": self.exit_code == 0,
            "objects": sum(r.objects for r in self.rows),
            "bytes": sum(r.bytes for r in self.rows),
            "days": [r.as_json() for r in self.rows],
            "problems": self.problems,
            "losses_at_source": self.losses,
            "notes": self.notes,
        }


async def verify(
    destination: ObjectReader,
    segments: Sequence[Segment],
    keyring: Keyring,
    *,
    parallel: int,
    bounded_start: bool,
    bounded_end: bool = False,
    advance: Callable[[int], None] | None = None,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Verdict:
    """Verify every live entry of `segments` (delete markers are skipped); see module doc."""
    objects = [s for s in segments if not s.is_delete_marker]
    failures: list[tuple[Segment, ArchiverError]] = []
    checked: dict[tuple[str, str], Segment] = {}
    root = Path(tempfile.gettempdir())
    temp = temp_dir(root, "archiverd-verify-", ignore_cleanup_errors=True)
    work = Path(temp.name)
    # Threads, not processes: inflate, AES-GCM and SHA-256 release the GIL on these buffers,
    # and a thread costs no start-up (the keyring stays in this process's memory).
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="archiverd-verify")
    try:

        async def one(segment: Segment) -> None:
            def seen(metadata: Mapping[str, str]) -> None:
                # Judged on its metadata's claims even if the body fails below (reported as
                # a failure), so a damaged body is not also counted as a hole in the chain.
                checked[(segment.key, segment.version_id)] = replace(segment, metadata=metadata)
                check_identity(segment, metadata)

            try:
                metadata, digest = await read_segment(
                    destination,
                    segment,
                    partial(_verify_body, keyring=keyring),
                    work,
                    attempts,
                    pool,
                    check=seen,
                )
                expected = metadata.get("archiverd-plaintext-sha256", "")
                if expected and digest != expected:
                    raise EnvelopeMismatchError(
                        "decrypted content does not match the plaintext SHA-256 in its metadata"
                    )
            except ArchiverError as exc:
                failures.append((segment, exc))
            except OSError as exc:  # a local file, not the archive
                if not no_room(exc):
                    failures.append((segment, ArchiverError(str(exc))))
                    return
                largest = human_bytes(max(s.size for s in objects))
                raise OutputError(
                    f"no room to copy {segment.key} into the temp dir {root} to check it: "
                    f"{exc.strerror}: set TMPDIR to a file system with room for the objects "
                    f"checked at once (the largest is {largest})"
                ) from None
            finally:
                if advance is not None:
                    advance(segment.size)

        # One object per worker, streamed: its download overlaps its own decryption.
        await bounded_gather([one(s) for s in objects], parallel + 1)
    finally:
        pool.shutdown(cancel_futures=True)
        temp.cleanup()
    current = [checked.get((s.key, s.version_id), s) for s in latest_or_recovered(segments)]
    # A current object that could not even be downloaded has no metadata: the failure is
    # reported, and its stream is judged on the others.
    current = [s for s in current if s.metadata is not None]
    streams = check_streams(current, bounded_start=bounded_start, bounded_end=bounded_end)
    failures.sort(key=lambda item: item[0].order)
    recovered = [s for s in current if s.recovered]
    return Verdict(_rows(objects, failures, streams, current), failures, streams, recovered)


def _verify_body(src: BinaryIO, metadata: Mapping[str, str], keyring: Keyring) -> str:
    """In a worker thread: the plaintext SHA-256 of the packed body `src` (nothing kept)."""
    from archiverd.pack import verify_stream

    return verify_stream(src, metadata, keyring).plaintext_sha256


def _rows(
    objects: Sequence[Segment],
    failures: Sequence[tuple[Segment, ArchiverError]],
    streams: Sequence[StreamReport],
    current: Sequence[Segment],
) -> list[DayRow]:
    rows: dict[tuple[str, str], DayRow] = {}

    def row(segment: Segment) -> DayRow:
        where = (segment.parsed.host, segment.parsed.day)
        return rows.setdefault(where, DayRow(*where))

    for segment in objects:
        r = row(segment)
        r.objects += 1
        r.bytes += segment.size
    for segment, _ in failures:
        row(segment).failed += 1
    for report in streams:
        for day in sorted({(s.parsed.host, s.parsed.day) for s in report.segments}):
            counts = rows[day].streams
            counts[report.status] = counts.get(report.status, 0) + 1
    for segment in current:
        for loss in losses_of(segment.metadata or {}):
            r = row(segment)
            r.losses += 1
            r.lost_bytes += loss.bytes or 0
    return sorted(rows.values(), key=lambda r: (r.host, r.day))


STATUSES = ("complete", "open", "gaps", "broken", "unchained")


def write_summary(verdict: Verdict, out: TextIO) -> None:
    """The per-host, per-day table, then the totals."""
    header = ["HOST", "DAY", "OBJECTS", "BYTES", "FAILED", *[s.upper() for s in STATUSES]]
    header.append("LOST AT SOURCE")
    table = [header]
    for r in verdict.rows:
        lost = f"{r.losses} ({human_bytes(r.lost_bytes)})" if r.losses else "-"
        table.append(
            [r.host, r.day, str(r.objects), human_bytes(r.bytes), str(r.failed)]
            + [str(r.streams.get(s, 0)) for s in STATUSES]
            + [lost]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
    total = sum(r.objects for r in verdict.rows)
    size = human_bytes(sum(r.bytes for r in verdict.rows))
    verdict_text = {0: "complete", EXIT_LOST_AT_SOURCE: "complete as archived; the source lost "
                    "bytes"}.get(verdict.exit_code, "PROBLEMS FOUND")  # fmt: skip
    out.write(f"{total} object(s), {size} verified: {verdict_text}\n")


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The `verify` command; see the module docstring."""
    from archiverd.restore.commands import load_restore_keyring, query_from_args

    if not 1 <= args.parallel <= 64:
        raise ConfigError(f"--parallel {args.parallel}: use a number from 1 to 64")
    now = datetime.now(UTC)
    query = query_from_args(args, now)
    keyring = load_restore_keyring(settings, args.key_file or ())

    async def go() -> Verdict:
        selection = await archives.select(query, now, versions=args.versions, recover_deleted=True)
        live = [s for s in selection.segments if not s.is_delete_marker]
        progress = Progress(
            len(live), sum(s.size for s in live), sys.stderr, enabled=sys.stderr.isatty()
        )
        try:
            return await verify(
                archives,
                selection.segments,
                keyring,
                parallel=args.parallel,
                bounded_start=query.since is not None,
                bounded_end=query.until is not None,
                advance=progress.advance,
            )
        finally:
            progress.finish()

    archives = Archives.open(settings, args)
    startup.resume()  # loaded: see `archiverd.startup`
    verdict = asyncio.run(_closing(archives, go()))
    for message in verdict.problems:
        print(f"problem: {message}", file=sys.stderr)
    for message in verdict.losses:
        print(f"warning: {message}", file=sys.stderr)
    for message in verdict.notes:
        print(f"note: {message}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(verdict.as_json(), sort_keys=True) + "\n")
    else:
        write_summary(verdict, sys.stdout)
    return verdict.exit_code


async def _closing(destination: Archives, work: Any) -> Verdict:
    try:
        result: Verdict = await work
        return result
    finally:
        await destination.close()
