"""`archiverd ls` and `archiverd get`: parse options, select, then list or restore.

Keys come from ``--key-file`` (repeatable; old keys after a rotation are tried by key id),
else from the configuration (``encryption.key_file`` / ``decrypt_key_files``, also settable
as ``ARCHIVERD_ENCRYPTION__KEY_FILE``, or systemd's $CREDENTIALS_DIRECTORY) -- always files,
never a value on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from archiverd import startup
from archiverd.config import Settings
from archiverd.errors import (
    ArchiverError,
    ConfigError,
    NoMatchError,
    RestoreFailedError,
    StreamGapError,
)
from archiverd.formats.timestamps import to_ns
from archiverd.restore.archives import Archives
from archiverd.restore.continuity import StreamReport, check_streams
from archiverd.restore.listing import (
    Segment,
    Selection,
    fill_metadata,
    find_version,
)
from archiverd.restore.output import Progress, write_json_lines, write_table
from archiverd.restore.query import Query

if TYPE_CHECKING:
    from archiverd.pack import Keyring

_T = TypeVar("_T")


def query_from_args(args: argparse.Namespace, now: datetime) -> Query:
    """The `Query` named by the shared filter options."""
    return Query.from_options(
        now=now,
        container=args.container,
        host=args.host,
        since=args.since,
        until=args.until,
        labels=args.label,
        lookback=getattr(args, "lookback", None),
    )


def run_ls(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """List matching segments (every version with ``--versions``); exit 0 even when none."""
    stream = out if out is not None else sys.stdout
    now = datetime.now(UTC)
    query = query_from_args(args, now)

    async def go(archives: Archives) -> Selection:
        return await archives.select(query, now, versions=args.versions, with_metadata=args.long)

    selection = _with_archives(settings, args, go)
    if args.json:
        write_json_lines(selection.segments, stream)
    else:
        write_table(selection.segments, stream, versions=args.versions)
        if selection.deleted:
            print(
                f"({selection.deleted} more matching segment(s) deleted: see --versions)",
                file=sys.stderr,
            )
    return 0


def run_get(args: argparse.Namespace, settings: Settings) -> int:
    """Restore matching segments to ``--out DIR`` or merged to stdout (``--out -``)."""
    from archiverd.restore.fetch import FetchOptions, restore_to_dir, restore_to_stream

    now = datetime.now(UTC)
    query = query_from_args(args, now)
    to_stdout = args.out == "-"
    options = FetchOptions(
        parallel=_parallel(args.parallel),
        grep=_grep(args.grep),
        text=args.text,
        since_ns=_ns(query.since) if to_stdout else None,
        until_ns=_ns(query.until) if to_stdout else None,
    )
    keyring = load_restore_keyring(settings, args.key_file or ())

    async def go(destination: Archives) -> int:
        selection = await destination.select(
            query,
            now,
            versions=args.version_id is not None,
            recover_deleted=True,
        )
        segments = selection.segments
        if args.version_id is not None:
            segments = [find_version(selection, args.version_id)]
        if not segments:
            raise NoMatchError(_nothing(selection))
        # Continuity is judged from metadata before any download; output names carry the
        # container name; resume compares the plaintext SHA-256.
        segments = await fill_metadata(destination, segments, options.parallel * 2)
        refused: list[StreamReport] = []
        if args.version_id is None:
            segments, refused = _continuity(
                segments,
                bounded_start=query.since is not None,
                bounded_end=query.until is not None,
                allow_gaps=args.allow_gaps,
            )
            if refused and (to_stdout or not segments):
                raise _refused(refused, nothing_written=True)
        progress = Progress(
            len(segments),
            sum(s.size for s in segments),
            sys.stderr,
            enabled=sys.stderr.isatty(),
        )
        try:
            if to_stdout:
                summary = await restore_to_stream(
                    destination,
                    segments,
                    keyring,
                    sys.stdout.buffer,
                    options,
                    progress.advance,
                )
            else:
                summary = await restore_to_dir(
                    destination, segments, keyring, Path(args.out), options, progress.advance
                )
        finally:
            progress.finish()
        if summary.failures:
            raise _failed(summary.failures, len(segments), args.out)
        if refused:
            raise _refused(refused, nothing_written=False)
        if options.grep is not None and summary.messages == 0:
            print("no line matched --grep", file=sys.stderr)
            return 1
        return 0

    return _with_archives(settings, args, go)


def _continuity(
    segments: list[Segment], *, bounded_start: bool, bounded_end: bool, allow_gaps: bool
) -> tuple[list[Segment], list[StreamReport]]:
    """Say on stderr what the continuity check found; return the segments to restore and
    the streams refused (those with a hole or broken link, unless `allow_gaps`)."""
    for segment in segments:
        if segment.recovered:
            print(
                f"warning: {segment.key} was deleted (its latest version is a delete marker): "
                f"restoring its newest live version {segment.version_id}",
                file=sys.stderr,
            )
    refused: list[StreamReport] = []
    for report in check_streams(segments, bounded_start=bounded_start, bounded_end=bounded_end):
        for finding in report.findings:
            if finding.kind in ("gap", "broken"):
                if allow_gaps:
                    print(f"warning: {finding.message}; continuing (--allow-gaps)", file=sys.stderr)
            elif finding.kind != "unchained":
                print(f"warning: {finding.message}", file=sys.stderr)
        if report.problem and not allow_gaps:
            refused.append(report)
    if not refused:
        return segments, []
    skip = {(r.host, r.container_id) for r in refused}
    kept = [s for s in segments if (s.parsed.host, s.parsed.container_id) not in skip]
    return kept, refused


def _refused(reports: Sequence[StreamReport], *, nothing_written: bool) -> StreamGapError:
    """One error naming every hole of every refused stream."""
    lines = [
        f"{len(reports)} stream(s) have holes; "
        + ("nothing was written" if nothing_written else "they were not restored, the rest was")
        + ": rerun with --allow-gaps to restore around the holes, and see "
        "`archiverd ls --versions` for deleted segments"
    ]
    for report in reports:
        lines += [f"  {f.message}" for f in report.findings if f.kind in ("gap", "broken")]
    return StreamGapError("\n".join(lines))


def load_restore_keyring(settings: Settings, key_files: Sequence[Path]) -> Keyring:
    """The keyring: the ``--key-file``s when given (any tried by key id), else the config's."""
    from archiverd.pack import load_key_files, load_keyring

    if key_files:
        return load_key_files(key_files)
    from archiverd.credentials import resolve_credentials

    return load_keyring(settings.encryption, credentials=resolve_credentials(settings.destination))


def _with_archives(
    settings: Settings, args: argparse.Namespace, work: Callable[[Archives], Awaitable[_T]]
) -> _T:
    """`work` on the buckets `args`/`settings` name, in an event loop of its own. The buckets
    are opened (their modules, the S3 stack, imported) before it: that ends start-up
    (`archiverd.startup`)."""
    archives = Archives.open(settings, args)
    startup.resume()

    async def closing() -> _T:
        try:
            return await work(archives)
        finally:
            await archives.close()

    return asyncio.run(closing())


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else to_ns(moment)


def _parallel(value: int) -> int:
    if not 1 <= value <= 64:
        raise ConfigError(f"--parallel {value}: use a number from 1 to 64")
    return value


def _grep(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--grep {pattern!r} is not a valid regular expression: {exc}") from None


def _nothing(selection: Selection) -> str:
    text = "no archived segment matches these filters"
    if selection.deleted:
        text += (
            f"; {selection.deleted} matching segment(s) were deleted (their latest version is "
            "a delete marker): see `archiverd ls --versions` and pass --version-id"
        )
    return text + ": check the filters with `archiverd ls`"


def _failed(
    failures: Sequence[tuple[Segment, ArchiverError]], total: int, out: str
) -> ArchiverError:
    """One error listing every failed object (in key order), exit code of the first."""
    ordered = sorted(failures, key=lambda item: item[0].order)
    where = (
        "nothing was written"
        if out == "-"
        else f"the others are in {out}, rerun to retry (finished files are skipped)"
    )
    lines = [f"{len(ordered)} of {total} segment(s) failed verification or download; {where}"]
    lines += [f"  {segment.key}: {exc}" for segment, exc in ordered[:20]]
    if len(ordered) > 20:
        lines.append(f"  ... and {len(ordered) - 20} more")
    return RestoreFailedError("\n".join(lines), ordered[0][1].exit_code)
