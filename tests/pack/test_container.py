"""The single-file header: round trip, and clear errors for foreign or cut files."""

from __future__ import annotations

import io

import pytest

from archiverd.errors import TamperedError, TruncatedError
from archiverd.pack.container import MAGIC, encode_header, read_header, write_header


def test_header_roundtrip_leaves_stream_at_body() -> None:
    """read_header returns the metadata written and stops exactly at the body."""
    metadata = {"x-amz-c": "115", "archiverd-container-name": "caf\\u00e9"}
    buffer = io.BytesIO()
    write_header(buffer, metadata)
    buffer.write(b"BODY")
    buffer.seek(0)
    assert read_header(buffer) == metadata
    assert buffer.read() == b"BODY"
    assert encode_header(metadata).startswith(MAGIC)


def test_not_a_pack_file() -> None:
    """A file without the magic is refused naming what to pass instead."""
    with pytest.raises(TamperedError, match="not an archiverd pack file"):
        read_header(io.BytesIO(b"\x1f\x8b\x08 plain gzip, not a pack file"))


@pytest.mark.parametrize("cut", [0, 5, len(MAGIC) + 2, len(MAGIC) + 4 + 3])
def test_truncated_header(cut: int) -> None:
    """A file cut inside its header is a TruncatedError."""
    data = encode_header({"a": "b", "c": "d"})
    with pytest.raises(TruncatedError, match="ends inside its header"):
        read_header(io.BytesIO(data[:cut]))


@pytest.mark.parametrize(
    "payload", [b"[1, 2]", b'{"a": 1}', b"{not json", (70_000).to_bytes(4, "big")]
)
def test_malformed_header(payload: bytes) -> None:
    """A header that is not a JSON string map (or absurdly long) is refused as changed."""
    if len(payload) == 4:
        data = MAGIC + payload
    else:
        data = MAGIC + len(payload).to_bytes(4, "big") + payload
    with pytest.raises(TamperedError, match="was changed"):
        read_header(io.BytesIO(data))
