"""pack_stream / unpack_*: round trips, the on-disk format, and failures that release nothing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiverd.errors import (
    EnvelopeMismatchError,
    IntegrityError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from archiverd.pack import Keyring, pack_stream, unpack_stream, unpack_to_file
from archiverd.pack.keyring import aes_key_id
from tests.pack.dockerlogs import bulk_log, docker_logs
from tests.pack.helpers import leftovers, open_v3, pack_bytes, seal_v2, seal_v3

MASTER = bytes(range(32))
KEYRING = Keyring.from_raw_keys(MASTER)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def roundtrip(data: bytes, level: int = 1) -> bytes:
    body, result = pack_bytes(data, KEYRING, level)
    out = io.BytesIO()
    unpacked = unpack_stream(io.BytesIO(body), result.envelope, out, KEYRING)
    assert unpacked.plaintext_bytes == len(data)
    assert unpacked.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    return out.getvalue()


@SETTINGS
@given(data=st.binary(max_size=200_000), level=st.integers(min_value=0, max_value=3))
def test_roundtrip_random_bytes(data: bytes, level: int) -> None:
    """unpack(pack(x)) == x for arbitrary bytes at every compression level."""
    assert roundtrip(data, level) == data


@SETTINGS
@given(data=docker_logs())
def test_roundtrip_docker_logs(data: bytes) -> None:
    """unpack(pack(x)) == x for realistic Docker json-file logs (unicode, escapes)."""
    assert roundtrip(data) == data


@SETTINGS
@given(data=st.binary(min_size=1, max_size=50_000), position=st.integers(min_value=0))
def test_unhashed_unpack_still_refuses_any_flipped_byte(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, position: int
) -> None:
    """Without the plaintext SHA-256 a flipped body byte still fails and leaves no file."""
    body, result = pack_bytes(data, KEYRING)
    dst = tmp_path_factory.mktemp("unhashed") / "out.log"
    assert unpack_to_file(
        io.BytesIO(body), result.envelope, dst, KEYRING, hash_plaintext=False
    ) == (type(result_of(data))(len(data), ""))
    assert dst.read_bytes() == data
    dst.unlink()
    damaged = bytearray(body)
    damaged[position % len(body)] ^= 0x01
    with pytest.raises(IntegrityError):
        unpack_to_file(
            io.BytesIO(bytes(damaged)), result.envelope, dst, KEYRING, hash_plaintext=False
        )
    assert list(dst.parent.iterdir()) == []


def result_of(data: bytes) -> object:
    body, result = pack_bytes(data, KEYRING)
    return unpack_stream(io.BytesIO(body), result.envelope, io.BytesIO(), KEYRING)


@pytest.mark.slow
def test_roundtrip_many_chunks_reports_checksums() -> None:
    """A multi-MiB log round-trips; PackResult's sizes and hashes describe plaintext and body."""
    data = bulk_log(5 * 1024 * 1024 + 17)
    body, result = pack_bytes(data, KEYRING)
    assert result.plaintext_bytes == len(data)
    assert result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert result.packed_bytes == len(body) < len(data) // 3
    assert base64.b64decode(result.packed_sha256_b64) == hashlib.sha256(body).digest()
    assert result.key_id == KEYRING.key_id == aes_key_id(MASTER)
    assert result.envelope["archiverd-cipher-bytes"] == str(len(body))
    out = io.BytesIO()
    unpack_stream(io.BytesIO(body), result.envelope, out, KEYRING)
    assert out.getvalue() == data


def test_body_is_standard_v3_gzip() -> None:
    """An independent one-shot V3 decryption of the body yields a plain gzip of the input."""
    data = bulk_log(300_000)
    body, result = pack_bytes(data, KEYRING)
    assert result.envelope["x-amz-c"] == "115"
    assert result.envelope["x-amz-w"] == "02"
    assert result.envelope["x-amz-m"] == '{"kid":"' + KEYRING.key_id + '"}'
    assert gzip.decompress(open_v3(MASTER, result.envelope, body)) == data


def test_each_object_gets_fresh_keys() -> None:
    """Packing the same input twice gives different wrapped keys, message ids and bodies."""
    body1, first = pack_bytes(b"same input\n" * 100, KEYRING)
    body2, second = pack_bytes(b"same input\n" * 100, KEYRING)
    for name in ("x-amz-3", "x-amz-i", "x-amz-d"):
        assert first.envelope[name] != second.envelope[name]
    assert body1 != body2


def test_reads_objects_written_by_other_v3_and_v2_writers() -> None:
    """V3 and V2 objects sealed one-shot by other code (multi-member gzip) unpack."""
    plaintext = b"first member\n" * 50 + b"second member\n" * 50
    gz = gzip.compress(plaintext[:650]) + gzip.compress(plaintext[650:])
    for seal in (seal_v3, seal_v2):
        envelope, body = seal(MASTER, KEYRING.key_id, gz)
        out = io.BytesIO()
        unpack_stream(io.BytesIO(body), envelope, out, KEYRING)
        assert out.getvalue() == plaintext


def test_verified_but_not_gzip_is_refused(tmp_path: Path) -> None:
    """An authentic object whose plaintext is not gzip fails and leaves no output."""
    envelope, body = seal_v3(MASTER, KEYRING.key_id, b"plain text, not gzip")
    with pytest.raises(IntegrityError, match="not a complete gzip stream"):
        unpack_to_file(io.BytesIO(body), envelope, tmp_path / "out.log", KEYRING)
    assert leftovers(tmp_path) == []


def test_unpack_to_file_publishes_private_file(tmp_path: Path) -> None:
    """unpack_to_file writes exactly the plaintext, mode 0600, and nothing else."""
    data = bulk_log(100_000)
    body, result = pack_bytes(data, KEYRING)
    unpack_to_file(io.BytesIO(body), result.envelope, tmp_path / "out.log", KEYRING)
    assert (tmp_path / "out.log").read_bytes() == data
    assert (tmp_path / "out.log").stat().st_mode & 0o777 == 0o600
    assert leftovers(tmp_path) == ["out.log"]


# --- failures: each names what happened, and nothing is released ---------------------------

DATA = bulk_log(400_000, seed=7)
BODY, RESULT = pack_bytes(DATA, KEYRING)
ENVELOPE = RESULT.envelope


class RecordingWriter(io.BytesIO):
    """An output that remembers whether anything was ever written to it."""

    writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def expect_failure(
    tmp_path: Path, body: bytes, envelope: dict[str, str], error: type[Exception], match: str
) -> None:
    """Both unpack forms raise `error`; no file, temp file or stream byte is released."""
    with pytest.raises(error, match=match) as caught:
        unpack_to_file(io.BytesIO(body), envelope, tmp_path / "out.log", KEYRING)
    assert type(caught.value) is error
    assert leftovers(tmp_path) == []
    out = RecordingWriter()
    with pytest.raises(error, match=match):
        unpack_stream(io.BytesIO(body), envelope, out, KEYRING, tmp_dir=tmp_path)
    assert out.writes == 0
    assert leftovers(tmp_path) == []


def flip_char(text: str, index: int) -> str:
    """Change one character to another of the same base64/JSON/digit class."""
    old = text[index]
    if old.isdigit():
        new = str((int(old) + 1) % 10) if old != "9" or index else "1"
    else:
        new = "B" if old == "A" else "A"
    return text[:index] + new + text[index + 1 :]


@pytest.mark.parametrize(
    ("field", "index", "match"),
    [
        ("x-amz-c", 2, "unsupported content algorithm x-amz-c"),
        ("x-amz-3", 20, r"wrapped data key \(x-amz-3\) does not authenticate"),
        ("x-amz-w", 1, "unknown wrap algorithm x-amz-w"),
        ("x-amz-m", 12, r"key id in x-amz-m .* was changed"),
        ("x-amz-i", 5, r"key commitment \(x-amz-d\) does not match"),
        ("x-amz-d", 5, r"key commitment \(x-amz-d\) does not match"),
        ("archiverd-cipher-bytes", 1, "archiverd-cipher-bytes says"),
    ],
)
def test_changed_envelope_field_is_tampering(
    tmp_path: Path, field: str, index: int, match: str
) -> None:
    """A changed character in any envelope field fails as TamperedError naming the field."""
    envelope = dict(ENVELOPE)
    envelope[field] = flip_char(envelope[field], index)
    expect_failure(tmp_path, BODY, envelope, TamperedError, match)


@pytest.mark.parametrize("field", sorted(ENVELOPE))
def test_missing_envelope_field_is_tampering(tmp_path: Path, field: str) -> None:
    """Dropping any envelope field (except the optional length) fails as TamperedError."""
    envelope = {k: v for k, v in ENVELOPE.items() if k != field}
    if field == "archiverd-cipher-bytes":
        out = io.BytesIO()
        unpack_stream(io.BytesIO(BODY), envelope, out, KEYRING)  # the S3EC does not need it
        assert out.getvalue() == DATA
        return
    expect_failure(tmp_path, BODY, envelope, TamperedError, re.escape(field))


def test_noncanonical_base64_is_tampering(tmp_path: Path) -> None:
    """Changing only the unused padding bits of a base64 field is still detected."""
    envelope = dict(ENVELOPE)
    text = envelope["x-amz-i"]  # 28 bytes -> 38 chars + "==": the last char has 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    envelope["x-amz-i"] = text[:-3] + alphabet[last ^ 1] + "=="
    expect_failure(tmp_path, BODY, envelope, TamperedError, "x-amz-i is malformed")


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (0, "GCM authentication tag does not verify"),  # first body byte (gzip magic)
        (len(BODY) // 2, "GCM authentication tag does not verify"),
        (len(BODY) - 17, "GCM authentication tag does not verify"),  # last ciphertext byte
        (len(BODY) - 16, "GCM authentication tag does not verify"),  # first tag byte
        (len(BODY) - 1, "GCM authentication tag does not verify"),  # last tag byte
    ],
)
def test_flipped_body_or_tag_bit_is_tampering(tmp_path: Path, where: int, match: str) -> None:
    """One flipped bit in the ciphertext or tag fails as TamperedError."""
    body = bytearray(BODY)
    body[where] ^= 0x04
    expect_failure(tmp_path, bytes(body), ENVELOPE, TamperedError, match)


@pytest.mark.parametrize("keep", [0, 10, 16, 1000, len(BODY) // 2, len(BODY) - 1])
def test_truncated_body(tmp_path: Path, keep: int) -> None:
    """A body cut short anywhere fails as TruncatedError."""
    expect_failure(tmp_path, BODY[:keep], ENVELOPE, TruncatedError, "truncated")


@pytest.mark.parametrize("extra", [b"\x00", b"garbage appended" * 1000])
def test_extended_body(tmp_path: Path, extra: bytes) -> None:
    """Bytes appended after the tag fail as TruncatedError saying they were appended."""
    expect_failure(tmp_path, BODY + extra, ENVELOPE, TruncatedError, "were appended")


def test_swapped_envelope(tmp_path: Path) -> None:
    """Another object's genuine envelope on this body fails as EnvelopeMismatchError."""
    _, other = pack_bytes(bulk_log(200_000, seed=99), KEYRING)
    expect_failure(tmp_path, BODY, other.envelope, EnvelopeMismatchError, "swapped")


def test_wrong_key(tmp_path: Path) -> None:
    """A keyring without the sealing key fails as WrongKeyError naming the needed key id."""
    other = Keyring.from_raw_keys(os.urandom(32))
    with pytest.raises(WrongKeyError, match=KEYRING.key_id):
        unpack_to_file(io.BytesIO(BODY), ENVELOPE, tmp_path / "out.log", other)
    assert leftovers(tmp_path) == []


SMALL_BODY, SMALL = pack_bytes(bulk_log(20_000, seed=3), KEYRING)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_fails(position: int, bit: int) -> None:
    """Flipping any single bit of a body is an IntegrityError and releases nothing."""
    body = bytearray(SMALL_BODY)
    body[position % len(body)] ^= 1 << bit
    out = RecordingWriter()
    with pytest.raises(IntegrityError):
        unpack_stream(io.BytesIO(bytes(body)), SMALL.envelope, out, KEYRING)
    assert out.writes == 0


class ZeroReader:
    """`size` zero bytes, read without ever holding them all."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return bytes(n)


class MaxWriteRecorder(io.RawIOBase):
    """A sink that keeps only the size of the largest single write."""

    largest = 0
    total = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.largest = max(self.largest, len(data))
        self.total += len(data)
        return len(data)


@pytest.mark.slow
def test_gzip_bomb_inflates_in_bounded_pieces() -> None:
    """256 MiB of zeros (a ~250 KiB object) is inflated at most 1 MiB at a time."""
    from archiverd.pack.stream import CHUNK_BYTES, _unpack

    size = 256 * 1024 * 1024
    body = io.BytesIO()
    result = pack_stream(ZeroReader(size), body, KEYRING)  # type: ignore[arg-type]
    assert result.packed_bytes < size // 500
    sink = MaxWriteRecorder()
    _unpack(io.BytesIO(body.getvalue()), result.envelope, sink, KEYRING, True)  # type: ignore[arg-type]
    assert sink.total == size
    assert sink.largest <= CHUNK_BYTES


def test_v2_changed_iv_fails_and_says_so(tmp_path: Path) -> None:
    """A V2 object (no key commitment) with a changed x-amz-iv fails naming that field."""
    envelope, body = seal_v2(MASTER, KEYRING.key_id, gzip.compress(DATA[:10_000]))
    iv = bytearray(base64.b64decode(envelope["x-amz-iv"]))
    iv[0] ^= 1
    envelope["x-amz-iv"] = base64.b64encode(bytes(iv)).decode()
    expect_failure(tmp_path, body, envelope, EnvelopeMismatchError, "x-amz-iv was changed")
