"""Conventions both destinations share: the whole-body checksum kept in user metadata."""

from __future__ import annotations

from collections.abc import Mapping

from archiverd.formats.layout import METADATA_LIMIT_BYTES

SHA256_METADATA = "archiverd-sha256"
"""User metadata holding the body's full SHA-256 (base64), so a HEAD can compare it even
where the server reports only a multipart COMPOSITE checksum (``<b64>-<parts>``)."""


def with_body_checksum(metadata: Mapping[str, str], sha256_b64: str) -> dict[str, str]:
    """`metadata` plus the body checksum, unless that would break S3's 2 KB metadata limit."""
    meta = dict(metadata)
    extra = len(SHA256_METADATA) + len(sha256_b64)
    if sum(len(k) + len(v) for k, v in meta.items()) + extra <= METADATA_LIMIT_BYTES:
        meta[SHA256_METADATA] = sha256_b64
    return meta


def body_checksum(
    server_checksum: str, metadata: Mapping[str, str], *, multipart: bool = False
) -> str:
    """The full-body SHA-256 of a stored object: the server's when it is a whole-object one,
    else the one we stored in metadata, else the server's composite value (never equal).

    `multipart` (ETag ``...-N`` or ChecksumType COMPOSITE) distrusts the server's value even
    without a ``-N`` suffix, which some servers leave off."""
    if server_checksum and "-" not in server_checksum and not multipart:
        return server_checksum
    return metadata.get(SHA256_METADATA, server_checksum)
