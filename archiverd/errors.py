"""The error tree: every failure archiverd reports on purpose is one of these.

Split by what the caller does next, not by where the error came from. Retryable errors
(marked R) are retried with backoff or on the next pass; every other one is permanent: an
operator (or the user of a command) must change something first, and the message says what::

    ArchiverError                    exit 1; base, never raised bare
    ├── ConfigError                  exit 78: fix the configuration (names the key)
    ├── KeyMaterialError             exit 77: the master key is missing, unreadable or malformed
    ├── StateError                   exit 73: the state directory or journal is unusable
    │   └── StateLockedError         exit 79: another archiverd holds the state dir's lock
    ├── OutputError                  exit 73: `get --out` cannot be written
    ├── FileRefusedError             a small file (key, secret, metadata) is not a regular file
    │                                or too large; its reader rewords it as its own error
    ├── IntegrityError               exit 65: an archive failed verification; nothing was released
    │   ├── WrongKeyError            the object was sealed with another key
    │   ├── TamperedError            authentication failed: a byte was changed
    │   ├── TruncatedError           the object is shorter (or longer) than it says
    │   ├── EnvelopeMismatchError    the envelope does not belong to this body
    │   └── StreamGapError           a stream has a hole or a broken chain link (`get`)
    ├── SourceError               R  exit 66: a log source cannot be read (logged, counted, retried)
    │   ├── OutsideRootError         a symlink leads out of the watched root: never followed
    │   ├── FilesMissingError     R  journaled files are not where they were (mid-rotation?)
    │   └── ListingError          R  a directory cannot be listed now (EMFILE, EACCES): no removal
    ├── DestinationError             exit 69: the bucket or directory cannot be written or read;
    │   │                            `reason` labels it for ``archiverd_upload_failures``
    │   ├── RetryableDestinationError  R  exit 75: network, throttling, 5xx: retried with backoff
    │   │   └── UnconditionalOnly     R  the server refuses If-None-Match: HEAD, then PUT without
    │   └── PermanentDestinationError  403, no such bucket, versioning off: an operator must act
    │       └── ObjectExistsError    a conditional PUT found the key taken (the uploader
    │                                compares checksums: the same body is success)
    ├── DownloadAbortedError         a download feeding a decrypting worker failed: the worker
    │                                keeps nothing; the download's own error is the one reported
    ├── NoMatchError                 exit 1: nothing matched the `ls`/`get` filters
    └── RestoreFailedError           some segments of a restore failed; the first one's exit code

(`RetryableFailure` and `PermanentFailure` are the short names destination code raises them by.)

Messages say what happened and what to do next; none contains key material. Foreign errors
(botocore, aiohttp, OSError from a socket) enter the tree only through `translated`, around
the calls that raise them, with a translator that knows the library: S3's is
`archiverd.destinations.failures.translate`, KMS's live in `archiverd.pack.wrapping`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from archiverd.destinations.base import StoredObject


class ArchiverError(Exception):
    """Base of every error archiverd raises on purpose."""

    exit_code: int = 1


class ConfigError(ArchiverError):
    """The configuration is invalid; the message names the key and how to fix it."""

    exit_code = os.EX_CONFIG


class KeyMaterialError(ArchiverError):
    """A master key (or key file) is missing, unreadable, too open or malformed."""

    exit_code = os.EX_NOPERM


class StateError(ArchiverError):
    """The state directory, spool or journal cannot be used."""

    exit_code = os.EX_CANTCREAT


class StateLockedError(StateError):
    """Another archiverd process holds ``state.dir``'s lock; two must never share it."""

    exit_code = 79


class FileRefusedError(ArchiverError):
    """`fsutil.read_small_file` refused a file: `reason` is ``not_regular`` or ``too_large``.
    Callers turn it into their own error (key, configuration, source) with their own advice."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class OutputError(ArchiverError):
    """The restore output directory or stream cannot be written."""

    exit_code = os.EX_CANTCREAT


class IntegrityError(ArchiverError):
    """An archive failed verification; no unauthenticated byte was released."""

    exit_code = os.EX_DATAERR


class WrongKeyError(IntegrityError):
    """The data key cannot be unwrapped with any configured master key."""


class TamperedError(IntegrityError):
    """The GCM tag (or key commitment) does not verify: the object was modified."""


class TruncatedError(IntegrityError):
    """The object is shorter or longer than its envelope says."""


class EnvelopeMismatchError(IntegrityError):
    """The envelope is valid but belongs to another object (swapped metadata or body)."""


class StreamGapError(IntegrityError):
    """A stream has a hole or a broken link; its plaintext was not released."""


class SourceError(ArchiverError):
    """A log source cannot be read; the daemon logs, counts and retries it."""

    exit_code = os.EX_NOINPUT


class OutsideRootError(SourceError):
    """A path (usually a symlink) resolves outside the watched root; it is not followed."""


class FilesMissingError(SourceError):
    """Journaled files of a stream are not where they were; retried before declared lost."""


class ListingError(SourceError):
    """A stream's directory or file cannot be looked at right now (too many open files,
    permission denied for a moment): its streams are left as they are and retried, never
    taken as removed."""


class DestinationError(ArchiverError):
    """The destination cannot be reached, written or read.

    `reason` is one of the labels of ``archiverd_upload_failures``: throttled, server_error,
    network, timeout, truncated, access_denied, no_bucket, versioning, kms, conflict,
    integrity, other.
    """

    exit_code = os.EX_UNAVAILABLE

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


class RetryableDestinationError(DestinationError):
    """A transient failure (network, throttling, 5xx): retry with backoff."""

    exit_code = os.EX_TEMPFAIL


class PermanentDestinationError(DestinationError):
    """A failure retrying will not fix (access denied, no bucket, versioning off)."""


RetryableFailure = RetryableDestinationError
PermanentFailure = PermanentDestinationError


class UnconditionalOnly(RetryableDestinationError):
    """The server refused the If-None-Match header itself (501, or 400 naming it): nothing
    was stored; the destination stops sending it, and the uploader checks with HEAD before
    writing again (it would otherwise replace a live object)."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: the server does not support If-None-Match", "other")


class ObjectExistsError(PermanentDestinationError):
    """A conditional PUT (If-None-Match: *) found a live object under the key already.

    The uploader answers it with a HEAD and a checksum comparison: the same body means a
    previous attempt succeeded (its response was lost), anything else is a conflict.
    """

    def __init__(self, key: str, existing: StoredObject | None = None) -> None:
        super().__init__(f"an object already exists under {key!r}", "conflict")
        self.key = key
        self.existing = existing


class DownloadAbortedError(ArchiverError):
    """Raised inside a restore worker when the download feeding it failed: give up, keep
    nothing (`archiverd.restore.streaming`)."""


class NoMatchError(ArchiverError):
    """Nothing matched the filters (or the version asked for does not exist)."""

    exit_code = 1


class RestoreFailedError(ArchiverError):
    """Some segments failed; the exit code is that of the first failure."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


Translator = Callable[..., ArchiverError]
"""``translate(exc, where=...)``: the error of this tree that a foreign exception means."""


def reason_of(exc: BaseException) -> str:
    """The ``archiverd_upload_failures`` reason of any error (``other`` when it has none)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return "integrity" if isinstance(exc, IntegrityError) else "other"


@contextmanager
def translated(translate: Translator, where: str, *, chain: bool = True) -> Iterator[None]:
    """Raise whatever the block raises as ``translate(exc, where=where)``.

    `where` says what was attempted (``PUT s3://bucket/key``); translators start their
    messages with it. Errors of this tree pass through unchanged. ``chain=False`` leaves the
    foreign exception out of the traceback (for libraries whose messages may echo request
    parameters, such as KMS plaintext).
    """
    try:
        yield
    except ArchiverError:
        raise
    except Exception as exc:
        raise translate(exc, where=where) from (exc if chain else None)


_WILL_RETRY = re.compile(r"[;:,] will retry$", re.MULTILINE)


def given_up(message: str) -> str:
    """`message` as a command that does not retry says it: a destination's transient
    failure ends in "will retry" (`archiverd.destinations.failures`), words for the daemon,
    which does; a command has given up, so each such line ends in "try again later"."""
    return _WILL_RETRY.sub("; try again later", message)
