"""Streaming pack (gzip then AES-256-GCM) and unpack (verify before release), bounded memory.

Pack reads 1 MiB chunks, gzips them with ISA-L and encrypts with suite 115 (see
`archiverd.pack.envelope`); the body is ciphertext || 16-byte tag, exactly what the AWS S3
Encryption Client writes. Unpack decrypts and gunzips into a private temp file, verifies the
tag at the end and only then renames (or copies) the plaintext out: no unauthenticated byte
is ever released. A failure is classified so the message says what happened:

- `WrongKeyError`: no configured key sealed the data key;
- `TamperedError`: the envelope, tag or a body byte changed;
- `TruncatedError`: the body is shorter/longer than its sealed ``archiverd-cipher-bytes``;
- `EnvelopeMismatchError`: the envelope is genuine but the body is another object's
  (the decrypted start is not gzip, so the content key is not this body's).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import io
import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from isal import igzip, isal_zlib

from archiverd.errors import (
    EnvelopeMismatchError,
    IntegrityError,
    TamperedError,
    TruncatedError,
)
from archiverd.pack import envelope as env
from archiverd.pack.keyring import KEY_BYTES, Keyring
from archiverd.pack.wrapping import WrappedKey

CHUNK_BYTES = 1024 * 1024
# Caps what one decompress call may produce, so a gzip bomb cannot balloon memory.
_MAX_INFLATE = CHUNK_BYTES
_GZIP_MAGIC = b"\x1f\x8b\x08"
_GZIP_WBITS = 31
_INFLATE_ERRORS: tuple[type[Exception], ...] = (isal_zlib.error, ValueError)  # type: ignore[assignment]


def tune_allocator() -> None:
    """glibc only: serve MiB-sized buffers from the heap and stop trimming it.

    Every chunk allocates a few 1 MiB buffers (read, decrypt, inflate). With glibc's
    defaults they are returned to the kernel when freed and page-faulted back in on the next
    chunk, which costs about a quarter of unpack's CPU (bench/pack.py prints both). Peak RSS
    does not change; the process keeps up to 64 MiB of free heap instead of unmapping it.
    Process-wide, so only an entry point calls it (`archiverd.cli.main`, once); idempotent;
    a no-op where there is no glibc `mallopt`.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 64 * 1024 * 1024)


@dataclass(frozen=True)
class PackResult:
    """What `pack_stream` wrote: the envelope for the object metadata and checksums."""

    envelope: dict[str, str]
    key_id: str
    plaintext_bytes: int
    plaintext_sha256: str
    packed_bytes: int
    packed_sha256_b64: str


@dataclass(frozen=True)
class UnpackResult:
    """What a verified unpack released."""

    plaintext_bytes: int
    plaintext_sha256: str
    """Hex SHA-256 of the plaintext; "" when the caller asked for no hash."""


@dataclass(frozen=True)
class ObjectKey:
    """One object's data key, sealed by the keyring's active key, and its message id.

    Made where the keyring lives (`object_key`); a packing process gets only this, over its
    pool's pipe, never the master key. Its repr hides the data key."""

    data_key: bytes = field(repr=False)
    wrapped: WrappedKey = field(repr=False)
    message_id: bytes
    key_id: str


def object_key(keyring: Keyring) -> ObjectKey:
    """A fresh random data key and message id, the key wrapped by `keyring`'s active key."""
    data_key = os.urandom(KEY_BYTES)
    wrapped = keyring.wrap(data_key)
    return ObjectKey(data_key, wrapped, os.urandom(env.MESSAGE_ID_BYTES), keyring.key_id)


def pack_stream(
    src: BinaryIO, dst: BinaryIO, keyring: Keyring, *, level: int | None = None
) -> PackResult:
    """Read `src` to EOF; write the object body (ciphertext || tag) to `dst`.

    Memory stays at a few MiB whatever the size. A fresh random data key and message id per
    call; the data key is wrapped by the keyring's active key. `level`: ISA-L's, the
    configured default when None.
    """
    if level is None:  # imported here: the settings (pydantic) stay out of packing processes
        from archiverd.config import DEFAULT_COMPRESSION_LEVEL

        level = DEFAULT_COMPRESSION_LEVEL
    return pack_with_key(src, dst, object_key(keyring), level=level)


def pack_with_key(src: BinaryIO, dst: BinaryIO, key: ObjectKey, *, level: int) -> PackResult:
    """`pack_stream` with a data key made beforehand (`object_key`); one key, one object."""
    content_key, commitment = env.derive_keys(key.data_key, key.message_id)
    encryptor = Cipher(algorithms.AES(content_key), modes.GCM(env.V3_IV)).encryptor()
    encryptor.authenticate_additional_data(env.SUITE_ID_BYTES)
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)
    plain_hash, body_hash = hashlib.sha256(), hashlib.sha256()
    plain_bytes = body_bytes = 0

    def emit(data: bytes) -> None:
        nonlocal body_bytes
        if data:
            dst.write(data)
            body_hash.update(data)
            body_bytes += len(data)

    # Each chunk's plaintext hash runs on a thread while the compressor reads the same chunk
    # (both release the GIL), done before the next read: a segment packs at about its
    # compressor's speed, not the sum of the two.
    with ThreadPoolExecutor(1, thread_name_prefix="archiverd-hash") as hasher:
        while chunk := src.read(CHUNK_BYTES):
            hashed = hasher.submit(plain_hash.update, chunk)
            plain_bytes += len(chunk)
            compressed = compressor.compress(chunk)
            hashed.result()
            if compressed:
                emit(encryptor.update(compressed))
    emit(encryptor.update(compressor.flush()) + encryptor.finalize())
    emit(encryptor.tag)
    return PackResult(
        envelope=env.build_v3(key.wrapped, key.message_id, commitment, body_bytes),
        key_id=key.key_id,
        plaintext_bytes=plain_bytes,
        plaintext_sha256=plain_hash.hexdigest(),
        packed_bytes=body_bytes,
        packed_sha256_b64=base64.b64encode(body_hash.digest()).decode("ascii"),
    )


def unpack_to_file(
    src: BinaryIO,
    envelope: Mapping[str, str],
    dst: Path,
    keyring: Keyring,
    *,
    hash_plaintext: bool = True,
    compressed: bool = False,
    on_plaintext: Callable[[bytes], None] | None = None,
) -> UnpackResult:
    """Verify, decrypt and gunzip `src` into `dst` (mode 0600), all or nothing.

    Integrity never depends on `hash_plaintext`: the GCM tag authenticates the gzip stream
    and gzip's CRC-32 and length cover the plaintext. The SHA-256 (about a fifth of unpack's
    CPU) is only for comparing with the segment's ``archiverd-plaintext-sha256`` metadata.

    With `compressed`, `dst` gets the verified gzip stream instead (decrypted, its tag, CRC,
    length and hash checked as above; `gunzip_into` releases its plaintext): a quarter of
    the plaintext's size or less on usual logs, for a caller that keeps many segments before
    releasing any. `on_plaintext` sees each plaintext chunk in order as it is inflated,
    *before* the tag verified: only for work that is thrown away unless this returns.

    The output goes to a temp file beside `dst`, which is renamed only after the tag
    verifies; on any failure neither `dst` nor the temp file is left behind. Not fsynced:
    callers that need durability sync `dst` themselves.
    """
    fd, temp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".unpack")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            result = _unpack(
                src, envelope, out, keyring, hash_plaintext, keep_gzip=compressed, see=on_plaintext
            )
        # Renamed only once verified. No fsync: a restore can simply be re-run, and syncing
        # gigabytes of plaintext would halve unpack throughput.
        os.replace(temp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return result


def unpack_stream(
    src: BinaryIO,
    envelope: Mapping[str, str],
    out: BinaryIO,
    keyring: Keyring,
    *,
    tmp_dir: Path | None = None,
    hash_plaintext: bool = True,
) -> UnpackResult:
    """Like `unpack_to_file`, then write the verified plaintext to `out` (e.g. stdout). The
    temp file in `tmp_dir` holds the verified gzip stream meanwhile, not the plaintext."""
    with tempfile.TemporaryFile(dir=tmp_dir) as temp:
        result = _unpack(src, envelope, temp, keyring, hash_plaintext, keep_gzip=True)
        temp.seek(0)
        gunzip_into(temp, out)
    out.flush()
    return result


def gunzip_into(src: BinaryIO, out: BinaryIO) -> None:
    """The plaintext of the gzip stream `src` (all its members) written to `out`, a MiB at a
    time: what `unpack_to_file(compressed=True)` verified, released. ISA-L inflates without
    the GIL, so another thread runs meanwhile."""
    with igzip.IGzipFile(fileobj=src, mode="rb") as plain:  # type: ignore[no-untyped-call]
        while chunk := plain.read(CHUNK_BYTES):
            out.write(chunk)


def verify_stream(src: BinaryIO, envelope: Mapping[str, str], keyring: Keyring) -> UnpackResult:
    """Authenticate, decrypt and gunzip `src`, keeping nothing: the plaintext is hashed and
    dropped (for `archiverd verify`, which must not write plaintext anywhere). Raises the
    same errors as `unpack_stream`."""
    return _unpack(src, envelope, cast(BinaryIO, _Discard()), keyring, True)


class _Discard(io.RawIOBase):
    """A sink that forgets what it is given."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _unpack(
    src: BinaryIO,
    envelope: Mapping[str, str],
    out: BinaryIO,
    keyring: Keyring,
    hash_plaintext: bool,
    *,
    keep_gzip: bool = False,
    see: Callable[[bytes], None] | None = None,
) -> UnpackResult:
    parsed = env.parse(envelope)
    data_key = keyring.unwrap(parsed.wrapped)
    if len(data_key) != KEY_BYTES:
        raise TamperedError("the unwrapped data key has the wrong length: envelope changed")
    if parsed.version == 3:
        content_key, commitment = env.derive_keys(data_key, parsed.message_id)
        if not hmac.compare_digest(commitment, parsed.commitment):
            raise TamperedError(
                "the key commitment (x-amz-d) does not match the data key and message id "
                "(x-amz-i): the envelope was changed; restore the original metadata"
            )
        decryptor = Cipher(algorithms.AES(content_key), modes.GCM(env.V3_IV)).decryptor()
        decryptor.authenticate_additional_data(env.SUITE_ID_BYTES)
    else:
        decryptor = Cipher(algorithms.AES(data_key), modes.GCM(parsed.iv)).decryptor()
    return _Unpacker(decryptor, out, hash_plaintext, keep_gzip, see).run(src, parsed)


class _Unpacker:
    """Decrypt + gunzip loop; keeps going after a gunzip error so the tag decides. `out`
    gets the plaintext, or with `keep_gzip` the decrypted gzip stream (still gunzipped here,
    for its checks and hash); `see`, if any, gets the plaintext too."""

    def __init__(
        self,
        decryptor: Any,
        out: BinaryIO,
        hash_plaintext: bool,
        keep_gzip: bool,
        see: Callable[[bytes], None] | None,
    ) -> None:
        self._decryptor = decryptor
        self._see = see
        self._out = out
        self._keep_gzip = keep_gzip
        self._hashing = hash_plaintext
        self._inflater: Any = isal_zlib.decompressobj(_GZIP_WBITS)
        self._hash = hashlib.sha256()
        self._plain_bytes = 0
        self._head = b""
        self._gzip_error: str | None = None

    def run(self, src: BinaryIO, parsed: env.Envelope) -> UnpackResult:
        tail = b""
        body_bytes = 0
        while chunk := src.read(CHUNK_BYTES):
            body_bytes += len(chunk)
            buffered = tail + chunk
            tail = buffered[-env.TAG_BYTES :]
            self._feed(self._decryptor.update(buffered[: -env.TAG_BYTES]))
        if len(tail) < env.TAG_BYTES:
            raise TruncatedError(
                f"the object body is only {body_bytes} bytes, shorter than its 16-byte tag: "
                "it was truncated (an incomplete upload or download); fetch it again"
            )
        try:
            self._feed(self._decryptor.finalize_with_tag(tail))
        except InvalidTag:
            raise self._classify(parsed, body_bytes) from None
        if parsed.cipher_bytes is not None and parsed.cipher_bytes != body_bytes:
            raise TamperedError(
                f"envelope field {env.CIPHER_BYTES_FIELD} says {parsed.cipher_bytes} bytes but "
                f"the authentic body has {body_bytes}: the metadata was changed"
            )
        self._finish_gzip()
        digest = self._hash.hexdigest() if self._hashing else ""
        return UnpackResult(self._plain_bytes, digest)

    def _feed(self, data: bytes) -> None:
        if len(self._head) < len(_GZIP_MAGIC):
            self._head += data[: len(_GZIP_MAGIC) - len(self._head)]
        if data and self._keep_gzip:
            self._out.write(data)
        if self._gzip_error is not None or not data:
            return
        try:
            while True:
                if self._inflater.eof:
                    # Bytes after a member: a concatenated gzip member (`cat a.gz b.gz`).
                    data = self._inflater.unused_data + data
                    if not data:
                        return
                    self._inflater = isal_zlib.decompressobj(_GZIP_WBITS)
                plain = self._inflater.decompress(data, _MAX_INFLATE)
                self._write(plain)
                data = self._inflater.unconsumed_tail
                if not data and len(plain) < _MAX_INFLATE and not self._inflater.eof:
                    return
        except _INFLATE_ERRORS as exc:
            self._gzip_error = str(exc)

    def _write(self, plain: bytes) -> None:
        if plain:
            if not self._keep_gzip:
                self._out.write(plain)
            if self._see is not None:
                self._see(plain)
            if self._hashing:
                self._hash.update(plain)
            self._plain_bytes += len(plain)

    def _finish_gzip(self) -> None:
        if self._gzip_error is None and not self._inflater.eof:
            self._gzip_error = "the gzip stream ends early"
        if self._gzip_error is not None:
            raise IntegrityError(
                f"the object decrypts and verifies but is not a complete gzip stream "
                f"({self._gzip_error}): it was not written by archiverd pack"
            )

    def _classify(self, parsed: env.Envelope, body_bytes: int) -> IntegrityError:
        differing = sum(a != b for a, b in zip(self._head, _GZIP_MAGIC, strict=False))
        if differing >= 2:
            # V2 has no key commitment: a changed x-amz-iv looks the same as a swap.
            also = " (or its x-amz-iv was changed)" if parsed.version == 2 else ""
            return EnvelopeMismatchError(
                "the envelope (metadata) is genuine but does not belong to this body: the "
                "content key decrypts it to noise. The metadata and body of two objects were "
                f"swapped{also}; pair each body with its own metadata"
            )
        expected = parsed.cipher_bytes
        if expected is not None and body_bytes < expected:
            return TruncatedError(
                f"the object body is {body_bytes} bytes but was sealed at {expected}: it was "
                "truncated (an incomplete upload or download); fetch it again"
            )
        if expected is not None and body_bytes > expected:
            return TruncatedError(
                f"the object body is {body_bytes} bytes but was sealed at {expected}: "
                f"{body_bytes - expected} bytes were appended; it was extended after sealing"
            )
        return TamperedError(
            "the GCM authentication tag does not verify: a byte of the body or tag was "
            "changed (or it was truncated). Nothing was released; restore the object from "
            "another version or copy"
        )
