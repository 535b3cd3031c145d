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

from archiverd.config import Settings
from archiverd.destinations.base import Destination
from archiverd.errors import ArchiverError, ConfigError, NoMatchError, RestoreFailedError
from archiverd.restore.listing import (
    Segment,
    Selection,
    fill_metadata,
    find_version,
    select,
)
from archiverd.restore.output import Progress, write_json_lines, write_table
from archiverd.restore.query import Query

if TYPE_CHECKING:
    from archiverd.pack import Keyring

DEFAULT_PARALLEL = 4
_T = TypeVar("_T")


def add_ls_arguments(parser: argparse.ArgumentParser) -> None:
    """Options `ls` adds to the shared filters."""
    _lookback_arg(parser)
    parser.add_argument(
        "--long", "-l", action="store_true", help="also show name and lines (one HEAD per object)"
    )


def add_get_arguments(parser: argparse.ArgumentParser) -> None:
    """Options `get` adds to the shared filters."""
    _lookback_arg(parser)
    parser.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"downloads at once (default {DEFAULT_PARALLEL})",
    )


def _lookback_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lookback",
        metavar="DURATION",
        help="with --since: also search partitions this far before it for segments that "
        "began earlier (default 1d)",
    )


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

    async def go(destination: Destination) -> Selection:
        return await select(
            destination, query, now, versions=args.versions, with_metadata=args.long
        )

    selection = asyncio.run(_with_destination(settings, go))
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

    async def go(destination: Destination) -> int:
        selection = await select(destination, query, now, versions=args.version_id is not None)
        segments = selection.segments
        if args.version_id is not None:
            segments = [find_version(selection, args.version_id)]
        if not segments:
            raise NoMatchError(_nothing(selection))
        if not to_stdout:
            # Output names carry the container name; resume compares the plaintext SHA-256.
            segments = await fill_metadata(destination, segments, options.parallel * 2)
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
        if options.grep is not None and summary.messages == 0:
            print("no line matched --grep", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(_with_destination(settings, go))


def load_restore_keyring(settings: Settings, key_files: Sequence[Path]) -> Keyring:
    """The keyring: the ``--key-file``s when given (any tried by key id), else the config's."""
    from archiverd.pack import load_key_files, load_keyring

    if key_files:
        return load_key_files(key_files)
    return load_keyring(settings.encryption)


async def _with_destination(settings: Settings, work: Callable[[Destination], Awaitable[_T]]) -> _T:
    from archiverd.destinations import open_destination

    destination = open_destination(settings)
    try:
        return await work(destination)
    finally:
        await destination.close()


def _ns(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


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
