"""The single-file form of an archive object: a small metadata header, then the body.

Used by `archiverd pack`/`unpack` and by the file:// destination for each stored version::

    b"ARCHIVERD-PACK\\n"          15-byte magic (format 1)
    4-byte big-endian length N   of the header, at most 64 KiB
    N bytes of JSON              {"name": "value", ...}: the object's user metadata (the
                                 envelope ``x-amz-*`` and ``archiverd-*`` names, no
                                 ``x-amz-meta-`` prefix), UTF-8, sorted keys
    the body                     ciphertext || 16-byte tag, byte-identical to the S3 object

To hand such a file to the AWS clients: PUT the body with the JSON as user metadata.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import BinaryIO

from archiverd.errors import TamperedError, TruncatedError

MAGIC = b"ARCHIVERD-PACK\n"
MAX_HEADER_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")


def encode_header(metadata: Mapping[str, str]) -> bytes:
    """The header bytes for `metadata`."""
    payload = json.dumps(dict(metadata), sort_keys=True, separators=(",", ":")).encode()
    if len(payload) > MAX_HEADER_BYTES:
        raise ValueError(f"metadata of {len(payload)} bytes exceeds {MAX_HEADER_BYTES}")
    return MAGIC + _LENGTH.pack(len(payload)) + payload


def write_header(dst: BinaryIO, metadata: Mapping[str, str]) -> None:
    """Write the header; the caller writes the body right after it."""
    dst.write(encode_header(metadata))


def read_header(src: BinaryIO) -> dict[str, str]:
    """Read and check the header, leaving `src` at the first body byte."""
    magic = _read_exact(src, len(MAGIC))
    if magic != MAGIC:
        raise TamperedError(
            "this is not an archiverd pack file (bad magic): pass a file made by "
            "`archiverd pack` or the file:// destination"
        )
    (length,) = _LENGTH.unpack(_read_exact(src, _LENGTH.size))
    if length > MAX_HEADER_BYTES:
        raise TamperedError(f"the pack file header claims {length} bytes: the file was changed")
    try:
        metadata = json.loads(_read_exact(src, length))
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TamperedError("the pack file header is not a JSON string map: the file was changed")
    return metadata


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = src.read(size - len(data))
        if not chunk:
            raise TruncatedError(
                "the pack file ends inside its header: it was truncated; copy it again"
            )
        data += chunk
    return data
