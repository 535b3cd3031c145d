"""pack: gzip + AES-256-GCM in the AWS S3 Encryption Client's V3 format (docs/FORMAT.md).

Public API: `load_keyring`, `Keyring`, `pack_stream`, `unpack_to_file`, `unpack_stream`,
`gunzip_into`, `PackResult`, `UnpackResult`, `tune_allocator` (for entry points); the
single-file form in `archiverd.pack.container`.
"""

from __future__ import annotations

from archiverd.pack.keyring import Keyring, load_key_files, load_keyring
from archiverd.pack.stream import (
    PackResult,
    UnpackResult,
    gunzip_into,
    pack_stream,
    tune_allocator,
    unpack_stream,
    unpack_to_file,
    verify_stream,
)

__all__ = [
    "Keyring",
    "PackResult",
    "UnpackResult",
    "gunzip_into",
    "load_key_files",
    "load_keyring",
    "pack_stream",
    "tune_allocator",
    "unpack_stream",
    "unpack_to_file",
    "verify_stream",
]
