"""Download, verify, decrypt and decompress segments; no unverified byte is ever released.

Each object is decrypted as it downloads (`archiverd.restore.streaming`; from a bucket that
cannot stream, after a download to a temp file) by `archiverd.pack.unpack_to_file` on a
worker thread (it only renames its output into place once the GCM tag verified), checked
against the plaintext SHA-256 and identity in its metadata, and only then renamed to its
final name (``--out DIR``) or merged to stdout (``--out -``, after *every* segment
verified: each is kept meanwhile as its verified gzip stream, a quarter of the plaintext or
less on usual logs, and gunzipped again on the way out). Any failure removes the temp files
it made, so an interrupted or failed run leaves only complete, verified files, and a rerun
skips those (resume).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeVar

from archiverd.destinations.base import StoredObject
from archiverd.errors import (
    ArchiverError,
    EnvelopeMismatchError,
    OutputError,
)
from archiverd.formats.layout import format_ts
from archiverd.formats.timestamps import to_ns
from archiverd.fsutil import discard_output, no_room
from archiverd.pack import Keyring, UnpackResult, gunzip_into, unpack_to_file
from archiverd.restore.listing import ObjectReader, Segment, bounded_gather
from archiverd.restore.output import human_bytes
from archiverd.restore.query import container_name
from archiverd.restore.streaming import BodyReader, download_retries, stream_object
from archiverd.restore.writer import writing_behind

if TYPE_CHECKING:
    from archiverd.restore.records import Block

_T = TypeVar("_T")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CHUNK = 1024 * 1024
_NAME_MAX = 255  # bytes in one path component (ext4, xfs, tmpfs); names here are ASCII
DOWNLOAD_ATTEMPTS = 3
"""Tries per object; the waits between them are 0.5 s then 2 s (stamina; none in its test
mode)."""


@dataclass(frozen=True)
class FetchOptions:
    """How `get` writes what it restores."""

    parallel: int = 4
    grep: re.Pattern[str] | None = None
    text: bool = False
    attempts: int = DOWNLOAD_ATTEMPTS
    since_ns: int | None = None
    until_ns: int | None = None
    """`--out -` only: records outside [since, until] are left out (DIR keeps whole segments)."""

    @property
    def filtered(self) -> bool:
        """Whether output differs from the archived bytes (so resume cannot compare hashes)."""
        return self.grep is not None or self.text

    @property
    def trimmed(self) -> bool:
        """Whether `--out -` leaves out records outside a time window."""
        return self.since_ns is not None or self.until_ns is not None


class Fetched(NamedTuple):
    """What `fetch_segment` got: the object's metadata, what was unpacked, and whether its
    merge index was made."""

    metadata: dict[str, str]
    unpacked: UnpackResult
    indexed: bool


@dataclass
class Summary:
    """What one `get` did."""

    restored: int = 0
    skipped: int = 0
    plaintext_bytes: int = 0
    messages: int = 0
    failures: list[tuple[Segment, ArchiverError]] = field(default_factory=list)


Advance = Callable[[int], None]


def output_name(segment: Segment, metadata: Mapping[str, str] | None) -> str:
    """``<name>_<id12>_<first-ts>_<seq>.log``: who and when, unique per segment.

    Only ``[A-Za-z0-9_.-]`` reaches the file system (a bucket writer controls the name and
    the id: no control character, no path). A container id changed by that, or a name too
    long for one path component (255 bytes: a CRI pod's namespace, pod and container names
    can exceed it), is shortened deterministically and made unique with a hash of the
    original, so a rerun finds the same file.
    """
    raw_name = container_name(metadata or {})
    raw_id = segment.parsed.container_id
    name = _UNSAFE.sub("_", raw_name).strip("._")
    cid = _UNSAFE.sub("_", raw_id).strip("._") or "container"
    digest = hashlib.sha256(f"{raw_name}\0{raw_id}".encode()).hexdigest()[:16]
    if cid != raw_id:
        cid = f"{cid[:40]}-{digest[:8]}"
    who = f"{name}_{cid[:12]}" if name else cid
    tail = f"_{format_ts(segment.parsed.first_ts)}_{segment.parsed.seq:08d}.log"
    if len(who) + len(tail) > _NAME_MAX:
        who = f"{who[: _NAME_MAX - len(tail) - len(digest) - 1]}-{digest}"
    return who + tail


async def fetch_segment(
    destination: ObjectReader,
    segment: Segment,
    keyring: Keyring,
    dst: Path,
    work: Path,
    attempts: int = DOWNLOAD_ATTEMPTS,
    *,
    executor: Executor | None = None,
    compressed: bool = False,
    index: Path | None = None,
) -> Fetched:
    """Verified plaintext of `segment` at `dst` (or raise, leaving nothing), or with
    `compressed` its verified gzip stream (see `unpack_to_file`); and where asked, its
    merge index at `index`, made from the plaintext as it streams by where it can be
    (`StreamIndexer`).

    From a destination that streams bodies (S3) the body is decrypted as it arrives, in a
    thread of `executor` (`archiverd.restore.streaming`); otherwise it is downloaded to a
    temp file in `work` first. Either way `dst` appears only once the tag verified, and is
    removed again if the plaintext SHA-256 is not the metadata's.
    """
    metadata, (unpacked, indexed) = await read_segment(
        destination,
        segment,
        partial(_unpack, dst=dst, keyring=keyring, compressed=compressed, index=index),
        work,
        attempts,
        executor,
        check=partial(check_identity, segment),
    )
    expected = metadata.get("archiverd-plaintext-sha256", "")
    if expected and unpacked.plaintext_sha256 != expected:
        await asyncio.to_thread(dst.unlink, missing_ok=True)
        raise EnvelopeMismatchError(
            f"{segment.key}: decrypted content does not match the plaintext SHA-256 in its "
            "metadata (object and metadata come from different segments): restore another "
            "version from `archiverd ls --versions`"
        )
    return Fetched(metadata, unpacked, indexed)


async def read_segment(
    destination: ObjectReader,
    segment: Segment,
    work: Callable[[BinaryIO, Mapping[str, str]], _T],
    scratch: Path,
    attempts: int,
    executor: Executor | None,
    *,
    check: Callable[[Mapping[str, str]], None],
) -> tuple[dict[str, str], _T]:
    """``work(body, metadata)`` on a thread of `executor`, for `get` and `verify` alike:
    the body streamed as it downloads where the bucket can (`stream_object`), else
    downloaded to a temp file in `scratch` first (removed after). `check` sees the
    metadata before `work` starts and may raise to refuse the object."""
    reader = streaming_reader(destination, segment.key)
    if reader is not None:
        return await stream_object(
            reader,
            segment.key,
            segment.version_id or None,
            work,
            executor,
            attempts=attempts,
            check=check,
        )
    body = scratch / f".{uuid.uuid4().hex}.body"
    try:
        stored = await download_segment(destination, segment, body, attempts)
        metadata = dict(stored.metadata)
        check(metadata)

        def run() -> _T:
            with body.open("rb") as src:
                return work(src, metadata)

        return metadata, await asyncio.get_running_loop().run_in_executor(executor, run)
    finally:
        body.unlink(missing_ok=True)


def streaming_reader(destination: ObjectReader, key: str) -> BodyReader | None:
    """The bucket `key` comes from, when it streams bodies (see `fetch_segment`)."""
    route = getattr(destination, "route", None)
    target = route(key) if route is not None else destination
    return target if isinstance(target, BodyReader) else None


async def download_segment(
    destination: ObjectReader, segment: Segment, body: Path, attempts: int
) -> StoredObject:
    """Download, retrying transient failures (network, a short or corrupt transfer)."""
    async for attempt in download_retries(attempts):
        with attempt:
            return await destination.download(segment.key, body, segment.version_id or None)
    raise AssertionError("unreachable: stamina re-raises the last failure")


def check_identity(segment: Segment, metadata: Mapping[str, str]) -> None:
    """The metadata describes the segment its key names (catches objects copied elsewhere)."""
    said_id = metadata.get("archiverd-container-id")
    said_first = metadata.get("archiverd-first-ts")
    if (said_id is not None and said_id != segment.parsed.container_id) or (
        said_first is not None and said_first != format_ts(segment.parsed.first_ts)
    ):
        raise EnvelopeMismatchError(
            f"{segment.key}: its metadata describes another segment (container {said_id}, "
            f"first record {said_first}): the object was copied or swapped; restore another "
            "version from `archiverd ls --versions`"
        )


def _unpack(
    src: BinaryIO,
    metadata: Mapping[str, str],
    dst: Path,
    keyring: Keyring,
    compressed: bool,
    index: Path | None,
) -> tuple[UnpackResult, bool]:
    """`unpack_to_file`, and whether the index was made (a fresh one for every attempt)."""
    if index is None:
        return unpack_to_file(src, metadata, dst, keyring, compressed=compressed), False
    from archiverd.restore.records import StreamIndexer

    indexer = StreamIndexer(index)
    try:
        unpacked = unpack_to_file(
            src, metadata, dst, keyring, compressed=compressed, on_plaintext=indexer.feed
        )
    except BaseException:
        indexer.abandon()
        raise
    return unpacked, indexer.finish()


async def restore_to_dir(
    destination: ObjectReader,
    segments: Sequence[Segment],
    keyring: Keyring,
    out_dir: Path,
    options: FetchOptions,
    advance: Advance,
) -> Summary:
    """One verified file per segment in `out_dir`; skips files already restored intact.

    Work files live in a hidden temp dir inside `out_dir` (same filesystem, so the final
    rename is atomic), removed at the end even when interrupted.
    """
    try:
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, ".tmp", ".archiverd-get-", out_dir))
    except OSError as exc:
        raise OutputError(
            f"cannot write --out {str(out_dir)!r}: {exc.strerror}: pick a writable directory "
            "(or - for stdout)"
        ) from None
    summary = Summary()

    async def one(segment: Segment) -> None:
        final = out_dir / output_name(segment, segment.metadata)
        if not options.filtered and await asyncio.to_thread(_intact, final, segment.metadata):
            summary.skipped += 1
            advance(segment.size)
            return
        scratch = work / f"{uuid.uuid4().hex}.log"
        filtered = scratch.with_suffix(".filtered")
        try:
            await fetch_segment(
                destination, segment, keyring, scratch, work, options.attempts, executor=pool
            )
            if options.filtered:
                matched = await asyncio.to_thread(_filter_file, scratch, filtered, options)
                summary.messages += matched
                if not matched and options.grep is not None:
                    # No file for a segment without a matching line, as grep -l would.
                    final.unlink(missing_ok=True)
                    advance(segment.size)
                    return
                os.replace(filtered, final)
            else:
                os.replace(scratch, final)
            summary.restored += 1
            summary.plaintext_bytes += final.stat().st_size
        except ArchiverError as exc:
            summary.failures.append((segment, exc))
        except OSError as exc:
            summary.failures.append((segment, OutputError(f"writing {final}: {exc}")))
        finally:
            scratch.unlink(missing_ok=True)
            filtered.unlink(missing_ok=True)
        advance(segment.size)

    pool = ThreadPoolExecutor(options.parallel, thread_name_prefix="archiverd-unpack")
    try:
        await bounded_gather([one(s) for s in segments], options.parallel)
    finally:
        pool.shutdown(cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)
    return summary


async def restore_to_stream(
    destination: ObjectReader,
    segments: Sequence[Segment],
    keyring: Keyring,
    out: BinaryIO,
    options: FetchOptions,
    advance: Advance,
    tmp_root: Path | None = None,
) -> Summary:
    """Verify every segment into a private temp dir, then write them merged in time order.

    Nothing is written to `out` unless every segment verified. Each is kept meanwhile as its
    verified gzip stream (``unpack_to_file(compressed=True)``): the temp dir needs the room
    the objects take in the bucket, not their plaintext's. Streams are per container
    (segments in seq order, so each container's bytes come out exactly as written),
    interleaved by record time. When streams are merged, each segment is indexed as its
    plaintext streams by (`StreamIndexer`, in its unpack thread: the compiled pass over
    ordinary dockerd records); a segment it cannot index (other records, no compiled pass)
    is indexed once verified (`index_segment`) in worker processes
    (`archiverd.restore.workers`: that is Python code holding the GIL, so threads would only
    take turns with the downloads) while others download, so the merge itself parses
    nothing; a segment whose index could not be made at all (a worker died, a time beyond 64
    bits) is parsed by the merge instead, to the same bytes.

    The record parser and the worker processes are imported here, not with the module:
    `get --out DIR` and `verify` use neither.
    """
    from archiverd.restore.workers import Indexer

    summary = Summary()
    merging = not options.filtered and (
        options.trimmed or len({(s.parsed.host, s.parsed.container_id) for s in segments}) > 1
    )
    root = tmp_root if tmp_root is not None else Path(tempfile.gettempdir())
    with temp_dir(root, "archiverd-get-") as tmp:
        work = Path(tmp)
        paths: dict[int, Path] = {}
        plaintext_bytes = 0
        made: set[Path] = set()
        indexing: list[asyncio.Future[Path | None]] = []

        async def one(index: int, segment: Segment) -> None:
            nonlocal plaintext_bytes
            dst = work / f"{index:08d}.log.gz"
            try:
                fetched = await fetch_segment(
                    destination,
                    segment,
                    keyring,
                    dst,
                    work,
                    options.attempts,
                    executor=pool,
                    compressed=True,
                    index=dst.with_suffix(".idx") if indexer is not None else None,
                )
                paths[index] = dst
                plaintext_bytes += fetched.unpacked.plaintext_bytes
                if fetched.indexed:
                    made.add(dst)
                elif indexer is not None:
                    # Not awaited here: the next download need not wait for this index.
                    indexing.append(asyncio.ensure_future(indexer.index(dst)))
            except ArchiverError as exc:
                summary.failures.append((segment, exc))
            except OSError as exc:  # a local file: no room in the temp dir, an unreadable copy
                summary.failures.append((segment, _kept_failed(exc, root, segments)))
            advance(segment.size)

        indexer = Indexer(min(options.parallel, os.cpu_count() or 1)) if merging else None
        pool = ThreadPoolExecutor(options.parallel, thread_name_prefix="archiverd-unpack")
        try:
            # The worker processes start with the first segment that needs them.
            await bounded_gather([one(i, s) for i, s in enumerate(segments)], options.parallel)
            indexed = (
                set()
                if summary.failures  # nothing will be merged: the indexes are not awaited
                else made | {path for path in await asyncio.gather(*indexing) if path is not None}
            )
        finally:
            pool.shutdown(cancel_futures=True)
            for future in indexing:
                future.cancel()
            if indexer is not None:
                indexer.close()
        if summary.failures:
            return summary
        streams = _streams(segments, paths)
        summary.restored = len(segments)
        summary.plaintext_bytes = plaintext_bytes
        summary.messages = _write_out(streams, indexed, out, options)
    return summary


def _write_out(
    streams: list[tuple[int, list[Path]]], indexed: set[Path], out: BinaryIO, options: FetchOptions
) -> int:
    """The verified segment files (gzip) of `streams` to `out`: gunzipped as they are (one
    stream, nothing left out), else merged by time; how many messages were written (0 when
    copied). A reader gone (`| head`) ends it quietly; any other failure to write is an
    `OutputError`."""
    from archiverd.restore.records import merge, stream_messages, write_blocks, write_messages

    messages = 0
    try:
        with writing_behind(out) as sink:
            if len(streams) == 1 and not options.filtered and not options.trimmed:
                _gunzip(streams[0][1], sink)
            elif not options.filtered:
                # No --grep/--text: merge raw records a block at a time, never building
                # message objects.
                messages = write_blocks(
                    [(_blocks(files, start, indexed), start) for start, files in streams],
                    sink,
                    since_ns=options.since_ns,
                    until_ns=options.until_ns,
                )
            else:
                merged = merge(
                    [stream_messages(files, start, n) for n, (start, files) in enumerate(streams)]
                )
                messages = write_messages(
                    merged,
                    sink,
                    grep=options.grep,
                    text=options.text,
                    since_ns=options.since_ns,
                    until_ns=options.until_ns,
                )
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final
        # flush from raising again.
        discard_output(out)
    except OSError as exc:  # e.g. a full disk under `> file`
        discard_output(out)
        raise OutputError(
            f"writing to stdout: {exc.strerror or exc}: the output is incomplete"
        ) from None
    return messages


def temp_dir(
    root: Path, prefix: str, *, ignore_cleanup_errors: bool = False
) -> tempfile.TemporaryDirectory[str]:
    """A private temp dir (mode 0700) under `root` for a restore command's work files;
    `OutputError` saying what to do where none can be made."""
    try:
        return tempfile.TemporaryDirectory(
            prefix=prefix, dir=root, ignore_cleanup_errors=ignore_cleanup_errors
        )
    except OSError as exc:
        raise OutputError(
            f"cannot make a temp dir in {root}: {exc.strerror}: set TMPDIR to a writable directory"
        ) from None


def _kept_failed(exc: OSError, root: Path, segments: Sequence[Segment]) -> ArchiverError:
    """Why a segment could not be kept in the temp dir under `root` (with how much room all
    of them take, from their metadata's ranges, where every one says), or what else failed
    on a local file."""
    if not no_room(exc):
        return ArchiverError(str(exc))
    room = human_bytes(sum(segment.size for segment in segments))
    return OutputError(
        f"no room for it in the temp dir {root}: {exc.strerror} (get --out - keeps every "
        f"segment there, compressed, until all are verified: {room} here; set TMPDIR to a "
        "file system with room)"
    )


def _streams(
    segments: Sequence[Segment], paths: Mapping[int, Path]
) -> list[tuple[int, list[Path]]]:
    """Per (host, container): its segment files in seq order, with its first record's time."""
    groups: dict[tuple[str, str], list[tuple[int, Segment]]] = {}
    for index, segment in enumerate(segments):
        groups.setdefault((segment.parsed.host, segment.parsed.container_id), []).append(
            (index, segment)
        )
    streams = []
    for members in groups.values():
        members.sort(key=lambda item: (item[1].parsed.seq, item[1].parsed.first_ts))
        start = to_ns(members[0][1].parsed.first_ts)
        streams.append((start, [paths[index] for index, _ in members]))
    streams.sort(key=lambda item: item[0])
    return streams


def _blocks(files: list[Path], start: int, indexed: set[Path]) -> Iterator[Block]:
    """One stream's blocks, from the segments' indexes when every one has one."""
    from archiverd.restore.records import NO_INDEX_BELOW, stream_blocks, stream_indexed

    if start > NO_INDEX_BELOW and all(path in indexed for path in files):
        return stream_indexed([(path, path.with_suffix(".idx")) for path in files], start)
    return stream_blocks(files, start)


def _gunzip(paths: Sequence[Path], out: BinaryIO) -> None:
    """The verified gzip files, in order, gunzipped to `out`."""
    for path in paths:
        with path.open("rb") as gzipped:
            gunzip_into(gzipped, out)


def _filter_file(src: Path, dst: Path, options: FetchOptions) -> int:
    from archiverd.restore.records import keyed, stream_messages, write_messages

    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        count = write_messages(
            keyed(stream_messages([src], 0)), out, grep=options.grep, text=options.text
        )
        out.flush()
        os.fsync(out.fileno())
    return count


def _intact(path: Path, metadata: Mapping[str, str] | None) -> bool:
    """A finished file from an earlier run whose SHA-256 is the archived plaintext's."""
    expected = (metadata or {}).get("archiverd-plaintext-sha256")
    if not expected or not path.is_file():
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == expected
