"""The error tree: every failure archiverd reports on purpose is one of these.

Split by what the caller does next, not by where the error came from::

    ArchiverError                    exit 1; base, never raised bare
    ├── ConfigError                  exit 78: fix the configuration (names the key)
    ├── KeyMaterialError             exit 77: the master key is missing, unreadable or malformed
    ├── StateError                   exit 73: the state directory or journal is unusable
    │   └── StateLockedError         exit 79: another archiverd holds the state dir's lock
    ├── IntegrityError               exit 65: an archive failed verification; nothing was released
    │   ├── WrongKeyError            the object was sealed with another key
    │   ├── TamperedError            authentication failed: a byte was changed
    │   ├── TruncatedError           the object is shorter (or longer) than it says
    │   └── EnvelopeMismatchError    the envelope does not belong to this body
    ├── SourceError                  exit 66: a log source cannot be read (logged, counted, retried)
    ├── DestinationError             exit 69: the bucket or directory cannot be written or read
    │   ├── RetryableDestinationError    network, throttling, 5xx: retried with backoff
    │   └── PermanentDestinationError    403, no such bucket, versioning off: an operator must act
    └── NotBuiltError                exit 70: the command exists in the contract but not yet here

Messages say what happened and what to do next; none contains key material.
"""

from __future__ import annotations

import os


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


class SourceError(ArchiverError):
    """A log source cannot be read; the daemon logs, counts and retries it."""

    exit_code = os.EX_NOINPUT


class DestinationError(ArchiverError):
    """The destination cannot be reached, written or read."""

    exit_code = os.EX_UNAVAILABLE


class RetryableDestinationError(DestinationError):
    """A transient failure (network, throttling, 5xx): retry with backoff."""

    exit_code = os.EX_TEMPFAIL


class PermanentDestinationError(DestinationError):
    """A failure retrying will not fix (access denied, no bucket, versioning off)."""


class NotBuiltError(ArchiverError):
    """A command that the contract names but this build does not implement yet."""

    exit_code = os.EX_SOFTWARE
